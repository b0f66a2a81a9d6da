"""Deterministic, multi-core gzip of layer tars, and sniffing/undoing compression.

A layer must always compress to the same bytes, or every push of an unchanged
layer would be a new blob. ``gzip_stream`` therefore fixes everything that
varies between gzip writers: no file name, mtime 0, OS byte 255, a fixed
level, and fixed 1 MiB block boundaries. Blocks are deflated in parallel (as
pigz does: each block is primed with the previous block's last 32 KiB and ends
with a sync flush), so the output depends on the block size and the level but
not on the number of threads. zlib releases the GIL, so threads do use every
core. The output is one ordinary gzip member any gunzip reads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, cast

from nodeload.errors import SourceError
from nodeload.image import sniff
from nodeload.sources.streams import CHUNK, Prefixed, Reader, Writer, drain, read_full

# Measured on a 100 MB tar of binaries and text, 2 cores, 2 threads (MB/s -> size):
# level 1 161 MB/s -> 40.7 %, 2 147 -> 39.8 %, 3 116 -> 39.0 %, 4 110 -> 37.9 %,
# 6 53 -> 36.8 %. Level 4 is the knee: 7 % fewer bytes than level 1 on every
# push to every node for 0.3 s more per 100 MB once (the result is cached);
# level 6 doubles the time to save another 3 %.
GZIP_LEVEL = 4
BLOCK_SIZE = 1 << 20
_WINDOW = 32 * 1024  # deflate's history: priming a block with it keeps the ratio
_SAMPLE = 16 * 1024
_STORE_RATIO = 0.97  # a sample that does not shrink by 3 % marks the block incompressible
_MAX_WORKERS = 8


@dataclass(frozen=True)
class Compressed:
    """What compressing one layer produced."""

    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the gzip blob
    size: int
    uncompressed_size: int


def _gzip_header(level: int) -> bytes:
    # XFL 4 = fastest, 2 = best (RFC 1952); mtime 0; OS 255 = unknown.
    xfl = 4 if level == 1 else 2 if level == 9 else 0
    return bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, xfl, 0xFF])


def _deflate_block(block: bytes, history: bytes, level: int) -> bytes:
    # Incompressible blocks (already-compressed files, random data) cost zlib as much
    # time as text but gain nothing: store them. The choice depends on content only,
    # so the output stays deterministic.
    if _incompressible(block):
        level = 0
    if history:
        deflater = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=history)
    else:
        deflater = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    # A sync flush ends the block on a byte boundary, so blocks concatenate.
    return deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH)


def _incompressible(block: bytes) -> bool:
    """Whether three samples of the block (start, middle, end) all fail to shrink."""
    if len(block) < 4 * _SAMPLE:
        return False
    middle = len(block) // 2
    for start in (0, middle, len(block) - _SAMPLE):
        sample = block[start : start + _SAMPLE]
        if len(zlib.compress(sample, 1)) < len(sample) * _STORE_RATIO:
            return False
    return True


class _HashingWriter:
    """Writes through to ``dst`` while hashing and counting."""

    def __init__(self, dst: Writer) -> None:
        self.dst, self.hash, self.size = dst, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.dst.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def default_workers() -> int:
    """Threads for compression: one per core, bounded."""
    return max(1, min(os.cpu_count() or 1, _MAX_WORKERS))


def gzip_stream(
    src: Reader, dst: Writer, *, level: int = GZIP_LEVEL, workers: int | None = None
) -> Compressed:
    """Gzip ``src`` into ``dst`` deterministically, using several cores.

    Args:
        src: the uncompressed layer tar.
        dst: where the gzip blob is written.
        level: zlib level; part of the output's identity, like the block size.
        workers: compression threads (default: one per core).

    Returns:
        The digests and sizes of both forms.
    """
    out = _HashingWriter(dst)
    out.write(_gzip_header(level))
    raw_hash, crc, total, history = hashlib.sha256(), 0, 0, b""
    workers = workers or default_workers()
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="nodeload-gzip") as pool:
        while block := read_full(src, BLOCK_SIZE):
            raw_hash.update(block)
            crc, total = zlib.crc32(block, crc), total + len(block)
            pending.append(pool.submit(_deflate_block, block, history, level))
            history = block[-_WINDOW:]
            while len(pending) > 2 * workers:  # bounds memory to a few blocks
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())
    out.write(b"\x03\x00")  # an empty final block ends the deflate stream
    out.write(struct.pack("<II", crc, total & 0xFFFFFFFF))
    return Compressed(
        diff_id="sha256:" + raw_hash.hexdigest(),
        digest="sha256:" + out.hash.hexdigest(),
        size=out.size,
        uncompressed_size=total,
    )


def hash_stream(src: Reader) -> tuple[str, int]:
    """The sha256 digest and length of a stream, read in chunks."""
    writer = _HashingWriter(_NullWriter())
    drain(src, writer)
    return "sha256:" + writer.hash.hexdigest(), writer.size


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)


# Decompression bombs: real archives and layers expand a few times, sparse or zero-filled files a
# few hundred times; beyond this ratio (and a floor for small inputs) the input is refused.
MAX_EXPANSION_RATIO = 250
MIN_EXPANSION_LIMIT = 256 * 1024 * 1024


def expansion_limit(compressed_size: int) -> int:
    """How many bytes ``compressed_size`` compressed bytes may decompress to."""
    return max(compressed_size * MAX_EXPANSION_RATIO, MIN_EXPANSION_LIMIT)


class ExpansionLimitExceeded(SourceError):
    """Decompressed data grew beyond its bound (a likely decompression bomb)."""


class _Bounded:
    """A reader that fails once more than ``limit`` bytes came out of it."""

    def __init__(self, src: Reader, limit: int, what: str) -> None:
        self._src, self._left, self._limit, self._what = src, limit, limit, what

    def read(self, size: int = -1, /) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._src.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise ExpansionLimitExceeded(
                f"{self._what} expands beyond {self._limit} bytes, more than {MAX_EXPANSION_RATIO}x its "
                "compressed size: refusing it as a likely decompression bomb (decompress it yourself "
                "if you trust it)"
            )
        return data


@contextlib.contextmanager
def open_uncompressed(src: Reader, limit: int | None = None, what: str = "the data") -> Iterator[Reader]:
    """``src`` decompressed if it is gzip or zstd (by magic bytes), else as it is.

    ``limit`` bounds the decompressed size (see :func:`expansion_limit`); ``what``
    names the input in errors.

    Raises:
        SourceError: when the data is zstd and the ``zstd`` program is missing, is corrupt,
            or expands beyond ``limit`` (ExpansionLimitExceeded).
    """
    head = read_full(src, 4)
    stream = Prefixed(head, src)
    kind = sniff(head)
    if kind == "gzip":
        try:
            with gzip.GzipFile(fileobj=cast(IO[bytes], stream), mode="rb") as unzipped:
                yield _bounded(unzipped, limit, what)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise SourceError(f"{what}: gzip data is corrupt: {exc}") from exc
    elif kind == "zstd":
        with _zstd_decompress(stream) as unzstd:
            yield _bounded(unzstd, limit, what)
    else:
        yield stream


def _bounded(src: Reader, limit: int | None, what: str) -> Reader:
    return src if limit is None else _Bounded(src, limit, what)


@contextlib.contextmanager
def _zstd_decompress(src: Reader) -> Iterator[Reader]:
    # Python 3.11 has no zstd; the zstd program is everywhere zstd images are.
    if shutil.which("zstd") is None:
        raise SourceError("reading zstd-compressed data needs the zstd program (apt-get install zstd)")
    proc = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    failure: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(src, proc.stdin, failure), daemon=True)
    feeder.start()
    try:
        yield proc.stdout
        leftover = proc.stdout.read(1)
        code = proc.wait()
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        feeder.join()
        proc.wait()
    if failure:
        raise SourceError(f"reading zstd input failed: {failure[0]}") from failure[0]
    if code != 0 or leftover:
        raise SourceError("zstd data is corrupt (zstd -d failed)")


def _feed(src: Reader, sink: IO[bytes], failure: list[BaseException]) -> None:
    try:
        drain(src, sink, CHUNK)
    except BrokenPipeError:
        pass  # the reader stopped early; the exit status tells the rest
    except Exception as exc:  # reported by the consuming thread
        failure.append(exc)
    finally:
        with contextlib.suppress(OSError):
            sink.close()
