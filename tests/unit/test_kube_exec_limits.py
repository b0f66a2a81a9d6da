"""The pod-exec client against an API server that sends too much: what nodeload holds is bounded.

The server here is a bare aiohttp websocket on 127.0.0.1 that speaks the exec channel protocol
and sends whatever a test tells it (a real API server's frames are 32 KiB or so); nodeload's
side is the real :class:`~nodeload.transports.kube_exec.KubeExecutor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from nodeload.errors import NodeError
from nodeload.transports.execs import run_text
from nodeload.transports.kube_exec import (
    MAX_COLLECTED,
    MAX_MESSAGE,
    PROTOCOLS,
    STATUS,
    STDERR,
    STDOUT,
    ApiEndpoint,
    Counters,
    KubeExecutor,
)

FRAME = 32 * 1024
SUCCESS = bytes([STATUS]) + json.dumps({"metadata": {}, "status": "Success"}).encode()
Script = Callable[[web.WebSocketResponse], Awaitable[None]]


@asynccontextmanager
async def _executor(script: Script) -> AsyncIterator[KubeExecutor]:
    """A KubeExecutor whose every exec runs ``script`` on the server's side of the websocket."""

    async def exec_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        with contextlib.suppress(ConnectionResetError, RuntimeError):  # the client went away
            await script(ws)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{pod}/exec", exec_handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    endpoint = ApiEndpoint(f"http://127.0.0.1:{port}", ssl.create_default_context(), {})
    try:
        async with aiohttp.ClientSession() as session:
            yield KubeExecutor(session, endpoint, "nodeload", "agent-x", "agent", Counters())
    finally:
        await runner.cleanup()


def _run(script: Script, client: Callable[[KubeExecutor], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with _executor(script) as executor:
            return await asyncio.wait_for(client(executor), 60)

    return asyncio.run(main())


def _flood(channel: int, total: int) -> Script:
    async def script(ws: web.WebSocketResponse) -> None:
        frame = bytes([channel]) + b"x" * FRAME
        for _ in range(total // FRAME + 1):
            await ws.send_bytes(frame)
        await ws.send_bytes(SUCCESS)

    return script


async def _wait(executor: KubeExecutor) -> Any:
    process = await executor.start("true")
    try:
        return await process.wait()
    finally:
        process.close()


def test_a_message_over_the_bound_is_refused() -> None:
    async def huge(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(bytes([STDOUT]) + b"x" * (MAX_MESSAGE + 1))
        await ws.send_bytes(SUCCESS)

    async def read(executor: KubeExecutor) -> bytes:
        process = await executor.start("cat")
        try:
            return await process.stdout.read(65536)
        finally:
            process.close()

    with pytest.raises(NodeError, match=r"more than 4 MiB on the exec stream of pod nodeload/agent-x"):
        _run(huge, read)


def test_frames_of_the_usual_size_pass_whole() -> None:
    async def usual(ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(bytes([STDOUT]) + b"a" * FRAME)
        await ws.send_bytes(bytes([STDERR]) + b"warning\n")
        await ws.send_bytes(SUCCESS)

    status, out, err = _run(usual, lambda executor: run_text(executor, "probe"))
    assert (status, out, err) == (0, "a" * FRAME, "warning\n")


def test_stderr_is_kept_up_to_the_bound_then_the_command_fails() -> None:
    with pytest.raises(NodeError, match=r"more than 16 MiB of stderr, more than nodeload keeps"):
        _run(_flood(STDERR, MAX_COLLECTED + FRAME), _wait)


def test_unread_stdout_while_waiting_is_bounded() -> None:
    with pytest.raises(NodeError, match=r"more than 16 MiB of stdout that nothing read"):
        _run(_flood(STDOUT, MAX_COLLECTED + FRAME), _wait)


def test_a_command_whose_output_is_read_whole_is_bounded() -> None:
    with pytest.raises(NodeError, match=r"printed more than 16 MiB"):
        _run(_flood(STDOUT, MAX_COLLECTED + FRAME), lambda executor: run_text(executor, "probe"))


def test_a_slow_reader_holds_the_server_back() -> None:
    """The relay path: while nothing reads stdout, the server cannot send more than the
    socket buffers and aiohttp's small read-ahead hold (it would send without end otherwise)."""
    sent = 0

    async def endless(ws: web.WebSocketResponse) -> None:
        nonlocal sent
        frame = bytes([STDOUT]) + b"x" * FRAME
        while sent < 1 << 30:
            await ws.send_bytes(frame)
            sent += FRAME

    async def read_then_stall(executor: KubeExecutor) -> int:
        process = await executor.start("cat")
        try:
            assert await process.stdout.read(FRAME)
            await asyncio.sleep(1.0)
            stalled = sent
            await asyncio.sleep(0.5)
            assert sent == stalled  # held back, not merely slow
            return stalled
        finally:
            process.close()

    assert _run(endless, read_then_stall) < MAX_COLLECTED
