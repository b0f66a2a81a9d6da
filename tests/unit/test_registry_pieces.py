"""Upload bodies are handed to the nodes in large pieces, whatever size the client sends."""

import asyncio
from collections.abc import AsyncIterator

from nodeload.registry.protocol import pieces


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
