"""Tar archives read in place: members are indexed once and served by seeking.

Nothing is extracted. A gzip- or zstd-compressed archive is decompressed
once into a temporary file on disk (in the cache's scratch directory, not
tmpfs), which is deleted when the index is closed, garbage-collected, or at
interpreter exit, whichever comes first.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
import weakref
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nodeload.errors import SourceError
from nodeload.image import MAX_DOCUMENT_BYTES, sniff
from nodeload.sources.compress import open_uncompressed
from nodeload.sources.layer_cache import remove_stale
from nodeload.sources.streams import drain, open_window, read_full

_MAX_LINK_HOPS = 16


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

    def __init__(self, path: Path, scratch_dir: Path) -> None:
        """Index ``path``, decompressing it first into ``scratch_dir`` if needed.

        Raises:
            SourceError: when the file is missing, unreadable or not a tar.
        """
        self.path = path
        self._data_path = path
        self._cleanup: weakref.finalize[..., TarIndex] | None = None
        if _compression_of(path):
            self._data_path = self._decompress(scratch_dir)
        self._members = _index(self._data_path, str(path))

    def _decompress(self, scratch_dir: Path) -> Path:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(scratch_dir, "archive-*")
        fd, name = tempfile.mkstemp(dir=scratch_dir, prefix="archive-", suffix=".tar")
        # Registered before writing: an interrupted decompression is cleaned too.
        self._cleanup = weakref.finalize(self, _unlink, name)
        try:
            with (
                open(self.path, "rb") as packed,
                open_uncompressed(packed) as src,
                os.fdopen(fd, "wb") as dst,
            ):
                drain(src, dst)
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
