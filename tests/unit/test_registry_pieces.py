"""Upload bodies are handed to the nodes in large pieces, whatever size the client sends, and cut
when the client (not the nodes) stalls."""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader

from nodeload.registry.errors import RegistryError
from nodeload.registry.limits import Limits
from nodeload.registry.protocol import paced, pieces


async def _arriving(sizes: list[int]) -> AsyncIterator[bytes]:
    for i, size in enumerate(sizes):
        yield bytes([i % 256]) * size


def _collect(sizes: list[int], piece: int) -> list[bytes]:
    async def run() -> list[bytes]:
        return [p async for p in pieces(_arriving(sizes), piece)]

    return asyncio.run(run())


def test_small_chunks_are_joined_into_pieces_of_at_least_the_size() -> None:
    out = _collect([4096] * 600, 1 << 20)  # 2.34 MiB as docker push sends it, a few KiB at a time
    assert [len(p) for p in out] == [1 << 20, 1 << 20, 600 * 4096 - 2 * (1 << 20)]
    assert b"".join(out) == b"".join(bytes([i % 256]) * 4096 for i in range(600))


def test_large_chunks_pass_as_they_are_and_nothing_is_lost() -> None:
    assert [len(p) for p in _collect([3 << 20, 10, 2 << 20], 1 << 20)] == [3 << 20, (2 << 20) + 10]
    assert _collect([], 1 << 20) == []


class _Protocol:
    """What a StreamReader asks of its connection (flow control only)."""

    _reading_paused = False
    connected = True

    def pause_reading(self) -> None: ...

    def resume_reading(self, resume_parser: bool = True) -> None: ...


def _paced(sends: int, every: float, work: float, limits: Limits) -> tuple[int, str]:
    """A client sending ``sends`` chunks of 10 bytes, one every ``every`` seconds, read by a
    consumer that takes ``work`` seconds over each; the bytes read and the error code, if cut."""

    async def run() -> tuple[int, str]:
        stream = StreamReader(_Protocol(), 1 << 16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]

        async def client() -> None:
            for _ in range(sends):
                stream.feed_data(b"x" * 10)
                await asyncio.sleep(every)
            stream.feed_eof()

        sending = asyncio.ensure_future(client())
        got = 0
        try:
            async for data in paced(stream, limits, "BLOB_UPLOAD_INVALID"):
                got += len(data)
                await asyncio.sleep(work)
        except RegistryError as err:
            return got, f"{err.status} {err.code}"
        finally:
            sending.cancel()
        return got, ""

    return asyncio.run(run())


def test_a_trickling_body_is_cut_once_it_brings_too_little_in_the_window() -> None:
    limits = Limits(stall_seconds=0.3, stall_bytes=1000)
    got, error = _paced(100, 0.05, 0, limits)
    assert error == "408 BLOB_UPLOAD_INVALID" and got < 100


def test_time_spent_on_slow_nodes_is_not_the_clients() -> None:
    """The consumer (the nodes) takes longer than the window: the client, always ahead, is not cut."""
    limits = Limits(stall_seconds=0.2, stall_bytes=1000)
    assert _paced(5, 0.01, 0.1, limits) == (50, "")
