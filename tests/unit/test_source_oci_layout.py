"""OCI layouts as directories (oci:) and tarballs (oci-archive:)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nodeload.errors import ImageNotFound, SourceError
from nodeload.graph import resolve
from nodeload.image import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    ImageSource,
    read_document,
)
from nodeload.platforms import Platform
from nodeload.sources import LayerCache, open_source
from nodeload.sources.oci_layout import blob_path, open_oci_archive, open_oci_layout
from tests.helpers.oci import ImageSpec, LayoutInfo, tar_directory, write_layout


def _read_all(source: ImageSource, desc: Descriptor, offset: int = 0, chunk: int = 1000) -> bytes:
    """Read a blob the way a push does: bounded chunks, never all at once."""
    parts = []
    with source.open_blob(desc, offset) as stream:
        while data := stream.read(chunk):
            assert len(data) <= chunk
            parts.append(data)
    return b"".join(parts)


# Reading blobs, offsets, resolving platforms and a missing ref: test_source_conformance.py.


def test_single_manifest_layout(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", ref="v1")
    with open_source(f"oci:{info.path}") as source:
        assert source.root.digest == info.root.digest
        assert source.root.media_type == MEDIA_OCI_MANIFEST
        assert source.rewritable is False
        assert source.reference is None  # "v1" alone is a tag, not a name


def test_multi_platform_layout_has_the_index_as_root(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", platforms=["linux/amd64", "linux/arm64"])
    assert info.index is not None
    with open_oci_layout(info.path) as source:
        assert (source.root.media_type, source.root.digest) == (MEDIA_OCI_INDEX, info.index.digest)


@pytest.fixture()
def three_refs(tmp_path: Path) -> LayoutInfo:
    path = tmp_path / "img"
    write_layout(path, ref="v1", seed=1)
    write_layout(path, ref="docker.io/team/app:v2", seed=2)
    return write_layout(path, ref="v3", name="registry.local:5000/app:v3", seed=3)


@pytest.mark.parametrize(
    ("ref", "seed_entry"),
    [
        ("v1", 0),
        ("app:v1", 0),  # a full name whose tag is the short ref name
        ("docker.io/team/app:v2", 1),
        ("team/app:v2", 1),  # normalized comparison
        ("v2", 1),  # the tag of a full ref name
        ("registry.local:5000/app:v3", 2),  # io.containerd.image.name
        ("v3", 2),
    ],
)
def test_ref_selects_the_entry(three_refs: LayoutInfo, ref: str, seed_entry: int) -> None:
    index = json.loads((three_refs.path / "index.json").read_text())
    with open_source(f"oci:{three_refs.path}:{ref}") as source:
        assert source.root.digest == index["manifests"][seed_entry]["digest"]


def test_reference_prefers_the_containerd_name(three_refs: LayoutInfo) -> None:
    with open_oci_layout(three_refs.path, "v3") as source:
        assert source.reference == "registry.local:5000/app:v3"
    with open_oci_layout(three_refs.path, "v2") as source:
        assert source.reference == "docker.io/team/app:v2"


def test_several_entries_need_a_ref(three_refs: LayoutInfo) -> None:
    with pytest.raises(SourceError, match=r"holds 3 images.*v1.*v3"):
        open_oci_layout(three_refs.path)


def test_unknown_ref_lists_what_is_there(three_refs: LayoutInfo) -> None:
    with pytest.raises(ImageNotFound, match=r"'v9'.*it holds: .*v1"):
        open_oci_layout(three_refs.path, "v9")


def test_ambiguous_tag(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", ref="docker.io/a/x:v1", seed=1)
    write_layout(tmp_path / "img", ref="docker.io/b/y:v1", seed=2)
    with pytest.raises(SourceError, match="ambiguous"):
        open_oci_layout(tmp_path / "img", "v1")


def test_missing_oci_layout_file(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    (info.path / "oci-layout").unlink()
    with pytest.raises(SourceError, match=r"not an OCI image layout.*oci-layout"):
        open_oci_layout(info.path)


def test_corrupt_index_json_names_the_file(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    (info.path / "index.json").write_text("{broken")
    with pytest.raises(SourceError, match=r"index\.json is not valid JSON"):
        open_oci_layout(info.path)


def test_index_entry_without_digest(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    (info.path / "index.json").write_text('{"manifests": [{"size": 1}]}')
    with pytest.raises(SourceError, match=r"manifests\[0\]: 'digest' is missing"):
        open_oci_layout(info.path)


def test_missing_blob_names_its_path(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    layer = info.images[0].layers[0]
    info.blob_path(layer.digest).unlink()
    with (
        open_oci_layout(info.path) as source,
        pytest.raises(SourceError, match=str(info.blob_path(layer.digest))),
        source.open_blob(layer),
    ):
        pass


def test_blob_whose_content_does_not_match_its_digest(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    config = info.images[0].config
    info.blob_path(config.digest).write_bytes(b"x" * config.size)
    with open_oci_layout(info.path) as source, pytest.raises(SourceError, match="corrupt"):
        read_document(source, config)


@pytest.mark.parametrize(
    "digest",
    ["sha256:../../etc/passwd", "sha256:abc", "sha256:" + "A" * 64, "nodigest", "sha512:" + "a" * 64],
)
def test_malformed_digests_are_refused(digest: str) -> None:
    with pytest.raises(SourceError, match="invalid digest"):
        blob_path(digest)


def test_entry_without_media_type_is_read_from_the_document(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    index = json.loads((info.path / "index.json").read_text())
    del index["manifests"][0]["mediaType"]
    (info.path / "index.json").write_text(json.dumps(index))
    with open_oci_layout(info.path) as source:
        assert source.root.media_type == MEDIA_OCI_MANIFEST


# --- oci-archive ---------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_oci_archive(tmp_path: Path, compression: str | None) -> None:
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("needs the zstd program")
    info = write_layout(tmp_path / "img", platforms=["linux/amd64", "linux/arm64"], ref="v1")
    archive = tar_directory(info.path, tmp_path / "img.tar", compression)
    cache = LayerCache(tmp_path / "cache")
    with open_source(f"oci-archive:{archive}:v1", cache=cache) as source:
        assert source.root == info.root
        graph = resolve(source, Platform.parse("linux/arm64"))
        for layer in graph.layers:
            assert _read_all(source, layer, offset=7) == info.blobs[layer.digest][7:]
        leftovers = list(cache.scratch_dir.iterdir()) if cache.scratch_dir.exists() else []
        assert len(leftovers) == (0 if compression is None else 1)
    assert not cache.scratch_dir.exists() or list(cache.scratch_dir.iterdir()) == []


def test_oci_archive_reads_never_run_past_a_member(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img")
    archive = tar_directory(info.path, tmp_path / "img.tar")
    config = info.images[0].config
    with open_oci_archive(archive) as source, source.open_blob(config) as stream:
        assert stream.read() == info.images[0].config_bytes


def test_oci_archive_that_is_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"this is not a tarball" * 100)
    with pytest.raises(SourceError, match="not a readable tar"):
        open_oci_archive(tmp_path / "bad.tar", cache=LayerCache(tmp_path / "cache"))


def test_failed_open_of_compressed_archive_removes_its_temp_copy(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", ref="v1")
    archive = tar_directory(info.path, tmp_path / "img.tar.gz", "gzip")
    cache = LayerCache(tmp_path / "cache")
    with pytest.raises(ImageNotFound):
        open_oci_archive(archive, "nope", cache=cache)
    assert list(cache.scratch_dir.iterdir()) == []


def test_docker_media_types_and_a_forced_index(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", [ImageSpec((1, 2))], index=True, docker_media_types=True)
    with open_oci_layout(info.path) as source:
        assert source.root.media_type == MEDIA_DOCKER_LIST
        graph = resolve(source, Platform.parse("linux/amd64"))
        assert graph.manifest.desc.media_type == MEDIA_DOCKER_MANIFEST
        assert graph.layers == info.images[0].layers
