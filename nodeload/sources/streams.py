"""Small binary stream adapters the sources share: file windows, chunk iterators."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from nodeload.errors import SourceError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 20


class Reader(Protocol):
    """Anything with ``read(n)``: files, tar member streams, decompressors."""

    def read(self, size: int = -1, /) -> bytes: ...


class Writer(Protocol):
    """Anything with ``write(data)``."""

    def write(self, data: bytes, /) -> int: ...


def read_full(src: Reader, size: int) -> bytes:
    """Read exactly ``size`` bytes, or fewer only at the end of the stream."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        data = src.read(remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def drain(src: Reader, sink: Writer | None = None, chunk: int = CHUNK) -> int:
    """Copy ``src`` to ``sink`` (or discard it) in chunks; the number of bytes."""
    total = 0
    while data := src.read(chunk):
        total += len(data)
        if sink is not None:
            sink.write(data)
    return total


class Prefixed:
    """A stream with some already-read bytes put back in front of it."""

    def __init__(self, head: bytes, rest: Reader) -> None:
        """Read ``head`` first, then ``rest``."""
        self._head, self._rest = head, rest

    def read(self, size: int = -1, /) -> bytes:
        """Like ``io.RawIOBase.read``."""
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data


class SliceReader(io.RawIOBase):
    """The window ``[start, start + size)`` of a file, as a seekable stream of its own.

    Archive members are served this way: a read never runs past the member.
    """

    def __init__(self, file: io.FileIO, start: int, size: int) -> None:
        """Wrap ``file`` (owned: closed with this reader)."""
        super().__init__()
        self._file, self._start, self._size, self._pos = file, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(view[:want]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


class IterReader(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks (e.g. an HTTP response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        """Wrap ``chunks``; nothing is read ahead."""
        super().__init__()
        self._chunks, self._pending = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        got = min(len(view), len(self._pending))
        view[:got] = self._pending[:got]
        self._pending = self._pending[got:]
        return got


@contextmanager
def open_window(path: Path | int, start: int, size: int, offset: int = 0) -> Iterator[IO[bytes]]:
    """Open ``size`` bytes of ``path`` from ``start`` as a stream positioned at ``offset``.

    Each call opens the file anew, so several blobs can stream concurrently. ``path``
    may also be a file descriptor already opened for it (then owned by the stream).

    Raises:
        SourceError: when the file cannot be opened.
    """
    try:
        raw = io.FileIO(path, "r", closefd=True)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    window = SliceReader(raw, start, size)
    window.seek(offset)
    with io.BufferedReader(window, CHUNK) as stream:
        yield stream
