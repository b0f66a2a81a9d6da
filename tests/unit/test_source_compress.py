"""Deterministic parallel gzip, compression sniffing, and the layer cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from nodeload.errors import SourceError
from nodeload.image import sniff
from nodeload.sources.compress import BLOCK_SIZE, gzip_stream, hash_stream, open_uncompressed
from nodeload.sources.layer_cache import LayerCache, default_cache_dir
from tests.helpers.oci import layer_tar


def _payload(size: int) -> bytes:
    # Compressible but not trivial: random words.
    words = [os.urandom(4).hex() for _ in range(512)]
    rng = random.Random(size)
    return " ".join(rng.choice(words) for _ in range(size // 8)).encode()[:size]


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, 3 * BLOCK_SIZE + 17])
def test_gzip_roundtrips_and_reports_digests(size: int) -> None:
    data = _payload(size)
    out = io.BytesIO()
    result = gzip_stream(io.BytesIO(data), out)
    blob = out.getvalue()
    assert gzip.decompress(blob) == data
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert (result.size, result.uncompressed_size) == (len(blob), len(data))


def test_incompressible_blocks_are_stored_and_compressible_ones_shrink() -> None:
    noise = random.Random(7).randbytes(2 * BLOCK_SIZE)
    text = _payload(2 * BLOCK_SIZE)
    data = noise + text
    out = io.BytesIO()
    result = gzip_stream(io.BytesIO(data), out)
    assert gzip.decompress(out.getvalue()) == data
    # The noise costs only stored-block framing; the text still compresses.
    assert len(noise) < result.size < len(noise) + len(text) // 2
    again = io.BytesIO()
    assert gzip_stream(io.BytesIO(data), again, workers=1).digest == result.digest


def test_gzip_output_does_not_depend_on_threads() -> None:
    data = _payload(5 * BLOCK_SIZE + 3)
    blobs = set()
    for workers in (1, 2, 4):
        out = io.BytesIO()
        gzip_stream(io.BytesIO(data), out, workers=workers)
        blobs.add(out.getvalue())
    assert len(blobs) == 1


def test_gzip_header_has_no_name_and_no_mtime() -> None:
    out = io.BytesIO()
    gzip_stream(io.BytesIO(b"x"), out)
    header = out.getvalue()[:10]
    assert header[:4] == b"\x1f\x8b\x08\x00"  # deflate, no FNAME
    assert header[4:8] == b"\x00\x00\x00\x00"  # mtime 0


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs the gzip program")
def test_gzip_output_is_valid_for_gzip_itself() -> None:
    out = io.BytesIO()
    gzip_stream(io.BytesIO(_payload(2 * BLOCK_SIZE + 5)), out)
    subprocess.run(["gzip", "-t"], input=out.getvalue(), check=True)


def test_sniff() -> None:
    assert sniff(gzip.compress(b"a")[:4]) == "gzip"
    assert sniff(b"\x28\xb5\x2f\xfd") == "zstd"
    assert sniff(b"ustar") is None
    assert sniff(b"") is None


def test_open_uncompressed_plain_and_gzip() -> None:
    data = layer_tar(1)
    for packed in (data, gzip.compress(data)):
        with open_uncompressed(io.BytesIO(packed)) as stream:
            assert stream.read() == data


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_open_uncompressed_zstd() -> None:
    data = layer_tar(2, size=300_000)
    packed = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    with open_uncompressed(io.BytesIO(packed)) as stream:
        assert hash_stream(stream) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def test_corrupt_gzip_is_a_source_error() -> None:
    packed = bytearray(gzip.compress(layer_tar(3)))
    packed[-6] ^= 0xFF  # break the CRC
    with pytest.raises(SourceError, match="corrupt"), open_uncompressed(io.BytesIO(bytes(packed))) as stream:
        stream.read()


# --- the layer cache ---------------------------------------------------------


def test_cache_adds_and_finds_a_layer(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    data = layer_tar(4)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    assert cache.lookup(diff_id) is None
    layer = cache.add(io.BytesIO(data), {diff_id})
    assert layer is not None and layer == cache.lookup(diff_id)
    assert gzip.decompress(layer.path.read_bytes()) == data
    record = json.loads((cache.layers_dir / f"{diff_id[7:]}.json").read_text())
    assert record == {
        "diff_id": diff_id,
        "digest": layer.digest,
        "size": layer.size,
        "uncompressed_size": len(data),
    }
    with layer.open(offset=10) as stream:
        assert stream.read() == layer.path.read_bytes()[10:]


def test_cache_drops_unwanted_layers_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    assert cache.add(io.BytesIO(layer_tar(5)), {"sha256:" + "0" * 64}) is None
    assert list(cache.layers_dir.iterdir()) == []
    assert cache.compressions == 1


def test_cache_treats_a_damaged_entry_as_missing(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    data = layer_tar(6)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    layer = cache.add(io.BytesIO(data), {diff_id})
    assert layer is not None
    layer.path.write_bytes(layer.path.read_bytes()[:-1])
    assert cache.lookup(diff_id) is None
    (cache.layers_dir / f"{diff_id[7:]}.json").write_text("{not json")
    assert cache.lookup(diff_id) is None


def test_concurrent_adds_of_one_layer_agree(tmp_path: Path) -> None:
    data = layer_tar(7, size=3 * BLOCK_SIZE)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    results = []

    def add() -> None:
        results.append(LayerCache(tmp_path).add(io.BytesIO(data), {diff_id}))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.digest for r in results if r}) == 1
    assert LayerCache(tmp_path).lookup(diff_id) == results[0]
    assert sorted(p.name for p in LayerCache(tmp_path).layers_dir.iterdir()) == [
        f"{diff_id[7:]}.json",
        f"{diff_id[7:]}.tar.gz",
    ]


def test_cache_keeps_configs_by_digest(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    digest = cache.store_config(b'{"rootfs":{}}')
    assert cache.load_config(digest) == b'{"rootfs":{}}'
    (cache.configs_dir / digest[7:]).write_bytes(b"tampered")
    assert cache.load_config(digest) is None
    assert cache.load_config("sha256:" + "1" * 64) is None


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "nodeload"
    assert LayerCache().layers_dir == tmp_path / "nodeload" / "layers" / "sha256"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "nodeload"


def test_temp_files_of_killed_runs_are_swept(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    cache.layers_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = {
        "dead": f".tmp-{dead.pid}-abc",  # its process is gone
        "old": f".tmp-{os.getpid()}-old",  # alive, but a day old: the pid was reused
        "live": f".tmp-{os.getpid()}-new",  # a concurrent run's file in progress
        "foreign": "notours",
    }
    for name in names.values():
        (cache.layers_dir / name).write_bytes(b"x")
    os.utime(cache.layers_dir / names["old"], (0, 0))
    data = layer_tar(8)
    cache.add(io.BytesIO(data), {"sha256:" + hashlib.sha256(data).hexdigest()})
    left = {p.name for p in cache.layers_dir.iterdir()}
    assert names["dead"] not in left and names["old"] not in left
    assert names["live"] in left and names["foreign"] in left


def test_cache_directories_are_private(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    root.chmod(0o755)  # as an older version left it
    cache = LayerCache(root)
    data = layer_tar(9)
    cache.add(io.BytesIO(data), {"sha256:" + hashlib.sha256(data).hexdigest()})
    cache.store_config(b"{}")
    for directory in (root, root / "layers", cache.layers_dir, root / "configs", cache.configs_dir):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = LayerCache(blocker / "cache")
    with pytest.raises(SourceError, match=r"cannot use the layer cache .*XDG_CACHE_HOME"):
        cache.add(io.BytesIO(layer_tar(10)), set())
