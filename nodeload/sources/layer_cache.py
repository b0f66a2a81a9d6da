"""A disk cache of compressed layers, keyed by their uncompressed digest (diffID).

Docker's classic store hands out uncompressed layer tars; compressing them
is the slow part of reading an image, so each layer is compressed once and
kept under ``${XDG_CACHE_HOME:-~/.cache}/nodeload/``::

    layers/sha256/<diffid hex>.tar.gz   the gzip blob (see compress.gzip_stream)
    layers/sha256/<diffid hex>.json     {diff_id, digest, size, uncompressed_size}
    configs/sha256/<image id hex>       an image config, exactly as Docker has it

Every file is written to a temporary name in the same directory and renamed
into place, and the record is renamed only after its blob: a record on disk
always has its blob, and concurrent runs at worst compress a layer twice to
identical bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from nodeload import userdirs
from nodeload.errors import SourceError
from nodeload.image import sha256_digest
from nodeload.scratch import mkstemp, sweep
from nodeload.sources.compress import Compressed, gzip_stream
from nodeload.sources.streams import Reader, open_window

_SHA256 = re.compile(r"^sha256:([0-9a-f]{64})$")
_TMP_PREFIX = ".tmp-"


def default_cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/nodeload``, or your own ``~/.cache/nodeload`` when another
    user could redirect that one (``sudo -E``; see :func:`nodeload.userdirs.cache_dir`).

    Raises:
        SourceError: no cache directory is safe to use.
    """
    try:
        return userdirs.cache_dir()
    except PermissionError as exc:
        raise SourceError(f"cannot use the layer cache: {exc}") from exc


def _hex(digest: str) -> str:
    match = _SHA256.match(digest)
    if not match:
        raise SourceError(f"unsupported digest {digest!r}: expected sha256:<64 hex digits>")
    return match.group(1)


@dataclass(frozen=True)
class CachedLayer:
    """A compressed layer in the cache."""

    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    path: Path

    def open(self, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream the compressed blob from ``offset``."""
        return open_window(self.path, 0, self.size, offset)


class LayerCache:
    """Compressed layers and image configs on disk; safe to share between processes."""

    def __init__(self, root: Path | None = None) -> None:
        """Use ``root`` (default: :func:`default_cache_dir`)."""
        self.root = root or default_cache_dir()
        self.layers_dir = self.root / "layers" / "sha256"
        self.configs_dir = self.root / "configs" / "sha256"
        self.scratch_dir = self.root / "tmp"  # large temporary files, on disk (not tmpfs)
        self.compressions = 0  # layers compressed by this object, for tests and reports

    def ensure_dir(self, directory: Path) -> Path:
        """Create ``directory`` (and the cache root) private to this user: mode 0700.

        The cache names the images and layers a user handles; other local users need
        not know them. A root left 0755 by an older version is tightened.

        Raises:
            SourceError: when the directory cannot be created (read-only or foreign home).
        """
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.root.stat()
            if info.st_mode & 0o077 and info.st_uid == os.getuid():
                self.root.chmod(0o700)
            for part in reversed(directory.relative_to(self.root).parents):
                (self.root / part).mkdir(mode=0o700, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SourceError(
                f"cannot use the layer cache {directory}: {reason}; set XDG_CACHE_HOME to a writable "
                "directory"
            ) from exc
        return directory

    def scratch(self) -> Path:
        """The directory for large temporary files (on disk, not tmpfs), created on demand."""
        return self.ensure_dir(self.scratch_dir)

    def evict(self, diff_id: str) -> None:
        """Forget a cached layer (its record first: a record never outlives its blob)."""
        for suffix in (".json", ".tar.gz"):
            with contextlib.suppress(FileNotFoundError):
                (self.layers_dir / f"{_hex(diff_id)}{suffix}").unlink()

    def lookup(self, diff_id: str) -> CachedLayer | None:
        """The cached layer with this diffID, or None (also for a damaged entry).

        A hit marks the layer used now (its record's mtime): :meth:`prune` drops the least
        recently used first.
        """
        record_path = self.layers_dir / f"{_hex(diff_id)}.json"
        try:
            record = json.loads(record_path.read_bytes())
            layer = CachedLayer(
                diff_id=str(record["diff_id"]),
                digest=str(record["digest"]),
                size=int(record["size"]),
                uncompressed_size=int(record["uncompressed_size"]),
                path=self.layers_dir / f"{_hex(diff_id)}.tar.gz",
            )
            intact = layer.diff_id == diff_id and layer.path.stat().st_size == layer.size
        except (OSError, ValueError, KeyError, TypeError, SourceError):
            return None
        if not intact:
            return None
        with contextlib.suppress(OSError):
            os.utime(record_path)
        return layer

    def prune(self, older_than: timedelta | None = None, max_size: int | None = None) -> Pruned:
        """Drop layers unused for ``older_than``, then the least recently used until the cache
        holds at most ``max_size`` bytes; configs unused for ``older_than``; compressions left by
        killed runs.

        Safe while other runs use the cache: a layer being read stays readable (its file is
        only unlinked), and one dropped in the middle of a run is compressed again if needed.
        """
        now = time.time()
        pruned = Pruned()
        entries = sorted(self._layer_entries(), key=lambda entry: entry[0])  # least recently used first
        total = sum(size for _, size, _ in entries)
        for used, size, diff_id in entries:
            too_old = older_than is not None and now - used >= older_than.total_seconds()
            too_big = max_size is not None and total > max_size
            if not (too_old or too_big):
                continue
            self.evict(diff_id)
            total -= size
            pruned.layers += 1
            pruned.freed += size
        if older_than is not None:
            for config in _files(self.configs_dir):
                with contextlib.suppress(OSError):
                    info = config.stat()
                    if now - info.st_mtime >= older_than.total_seconds():
                        config.unlink()
                        pruned.configs += 1
                        pruned.freed += info.st_size
        if self.layers_dir.is_dir():
            sweep(self.layers_dir, _TMP_PREFIX)  # compressions of runs that were killed
        pruned.kept = total
        return pruned

    def _layer_entries(self) -> list[tuple[float, int, str]]:
        """(last use, bytes on disk, diffID) of every cached layer."""
        entries = []
        for record in _files(self.layers_dir, ".json"):
            blob = record.with_suffix(".tar.gz")
            with contextlib.suppress(OSError):
                used, size = record.stat().st_mtime, record.stat().st_size + blob.stat().st_size
                entries.append((used, size, f"sha256:{record.stem}"))
        return entries

    def add(self, src: Reader, wanted: Collection[str]) -> CachedLayer | None:
        """Compress the layer tar ``src`` into the cache if its diffID is in ``wanted``.

        The diffID is only known once the whole stream is read, so a layer
        that turns out to be unwanted is compressed and then dropped.

        Returns:
            The cached layer, or None when its diffID is not wanted.
        """
        self.ensure_dir(self.layers_dir)
        sweep(self.layers_dir, _TMP_PREFIX)
        with _atomic_file(self.layers_dir) as (tmp, commit):
            result = gzip_stream(src, tmp)
            self.compressions += 1
            if result.diff_id not in wanted:
                return None
            blob = self.layers_dir / f"{_hex(result.diff_id)}.tar.gz"
            commit(blob)
        self._write_record(result)
        return CachedLayer(result.diff_id, result.digest, result.size, result.uncompressed_size, blob)

    def _write_record(self, result: Compressed) -> None:
        record = json.dumps(asdict(result), sort_keys=True).encode()
        _write_atomic(self.layers_dir / f"{_hex(result.diff_id)}.json", record)

    def load_config(self, digest: str) -> bytes | None:
        """A cached image config by its digest (Docker's image ID), verified; marked used now."""
        path = self.configs_dir / _hex(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if sha256_digest(data) != digest:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def store_config(self, data: bytes) -> str:
        """Keep an image config; its digest."""
        digest = sha256_digest(data)
        self.ensure_dir(self.configs_dir)
        _write_atomic(self.configs_dir / _hex(digest), data)
        return digest


@dataclass
class Pruned:
    """What :meth:`LayerCache.prune` removed, and what the layers still take."""

    layers: int = 0
    configs: int = 0
    freed: int = 0
    kept: int = 0


def _files(directory: Path, suffix: str = "") -> list[Path]:
    """Regular, finished files of a cache directory (temporary ones excluded)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [directory / n for n in names if n.endswith(suffix) and not n.startswith(_TMP_PREFIX)]


@contextlib.contextmanager
def _atomic_file(directory: Path) -> Iterator[tuple[IO[bytes], Callable[[Path], None]]]:
    """A temporary file in ``directory``; ``commit(path)`` renames it into place.

    Uncommitted, it is deleted, whatever happens.
    """
    fd, tmp_name = mkstemp(_TMP_PREFIX, directory)
    committed: list[Path] = []

    def commit(path: Path) -> None:
        committed.append(path)

    try:
        with os.fdopen(fd, "wb") as tmp:
            yield tmp, commit
        if committed:
            os.replace(tmp_name, committed[0])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)  # only still there when not committed


def _write_atomic(path: Path, data: bytes) -> None:
    with _atomic_file(path.parent) as (tmp, commit):
        tmp.write(data)
        commit(path)
