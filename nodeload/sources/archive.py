"""Tar archives read in place: members are indexed once and served by seeking.

Nothing is extracted. A gzip- or zstd-compressed archive is decompressed
once into a temporary file on disk (in the cache's scratch directory, not
tmpfs), which is deleted when the index is closed, garbage-collected, or at
interpreter exit, whichever comes first.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nodeload.errors import SourceError
from nodeload.image import sniff
from nodeload.jsondoc import MAX_DOCUMENT_BYTES
from nodeload.scratch import mkstemp, sweep
from nodeload.sources.compress import expansion_limit, open_uncompressed
from nodeload.sources.streams import CHUNK, Reader, open_window, read_full

_MAX_LINK_HOPS = 16
_SCRATCH_PREFIX = "archive-"
# A decompression never leaves less than this free on the scratch disk (checked every 64 MiB).
_MIN_FREE_BYTES = 512 * 1024 * 1024
_ROOM_CHECK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Member:
    """A regular file inside the archive: where its bytes start and how many."""

    name: str
    offset: int
    size: int


def _clean(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


class TarIndex:
    """The members of one tar archive, readable without extracting it."""

    def __init__(self, path: Path, scratch_dir: Callable[[], Path]) -> None:
        """Index ``path``, decompressing it first into ``scratch_dir()`` if needed.

        Raises:
            SourceError: when the file is missing, unreadable or not a tar.
        """
        self.path = path
        self._data_path = path
        self._cleanup: weakref.finalize[..., TarIndex] | None = None
        if _compression_of(path):
            self._data_path = self._decompress(scratch_dir)
        self._members = _index(self._data_path, str(path))

    def _decompress(self, scratch_dir: Callable[[], Path]) -> Path:
        directory = scratch_dir()
        sweep(directory, _SCRATCH_PREFIX)
        fd, name = mkstemp(_SCRATCH_PREFIX, directory, suffix=".tar")
        # Registered before writing: an interrupted decompression is cleaned too, also at exit.
        self._cleanup = weakref.finalize(self, _unlink, name)
        try:
            limit = expansion_limit(os.stat(self.path).st_size)
            with (
                open(self.path, "rb") as packed,
                open_uncompressed(packed, limit, str(self.path)) as src,
                os.fdopen(fd, "wb") as dst,
            ):
                _copy_with_room(src, dst, directory, self.path)
        except OSError as exc:
            self.close()
            raise SourceError(f"cannot decompress {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise
        return Path(name)

    def describe(self, name: str) -> str:
        """How to name a member in messages: ``archive.tar:blobs/sha256/...``."""
        return f"{self.path}:{name}"

    def get(self, name: str) -> Member | None:
        """The member called ``name`` (links followed), or None."""
        return self._members.get(_clean(name))

    def member(self, name: str) -> Member:
        """The member called ``name``.

        Raises:
            SourceError: when the archive has no such file.
        """
        found = self.get(name)
        if found is None:
            raise SourceError(f"{self.describe(name)}: no such file in the archive")
        return found

    def names(self) -> list[str]:
        """Every regular file's name (links included under their own name)."""
        return list(self._members)

    def read(self, name: str) -> bytes:
        """A small member's bytes (a JSON document).

        Raises:
            SourceError: when it is missing or too large to be metadata.
        """
        found = self.member(name)
        if found.size > MAX_DOCUMENT_BYTES:
            raise SourceError(f"{self.describe(name)}: {found.size} bytes is too large for metadata")
        with self.open(found) as stream:
            return read_full(stream, found.size)

    def head(self, found: Member, size: int = 4) -> bytes:
        """The first bytes of a member, to sniff its compression."""
        with self.open(found) as stream:
            return read_full(stream, size)

    def open(self, found: Member, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a member from ``offset``; each call has its own file handle."""
        return open_window(self._data_path, found.offset, found.size, offset)

    def close(self) -> None:
        """Delete the decompressed copy, if any; the index is unusable afterwards."""
        if self._cleanup is not None:
            self._cleanup()


def _copy_with_room(src: Reader, dst: IO[bytes], directory: Path, label: Path) -> None:
    """Copy ``src`` to ``dst``, stopping before the disk under ``directory`` is full."""
    since_check = 0
    while data := src.read(CHUNK):
        dst.write(data)
        since_check += len(data)
        if since_check >= _ROOM_CHECK_BYTES:
            since_check = 0
            room = shutil.disk_usage(directory).free
            if room < _MIN_FREE_BYTES:
                raise SourceError(
                    f"not enough free space in {directory} to decompress {label} "
                    f"({room >> 20} MiB left); decompress it elsewhere or set XDG_CACHE_HOME"
                )


def _unlink(name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name)


def _compression_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            return sniff(file.read(4))
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _index(data_path: Path, label: str) -> dict[str, Member]:
    files: dict[str, Member] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(data_path, "r:") as tar:
            for info in tar:
                name = _clean(info.name)
                if info.isreg():
                    files[name] = Member(name, info.offset_data, info.size)
                elif info.issym():
                    links[name] = _clean(posixpath.join(posixpath.dirname(name), info.linkname))
                elif info.islnk():
                    links[name] = _clean(info.linkname)
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{label} is not a readable tar archive: {exc}") from exc
    for name in links:
        target = _follow(name, links)
        if target in files:
            files[name] = files[target]
    return files


def _follow(name: str, links: dict[str, str]) -> str:
    for _ in range(_MAX_LINK_HOPS):
        if name not in links:
            return name
        name = links[name]
    return name
