"""Nodes that are containers of the local Docker engine (kind, k3d): reached with ``docker exec``.

Each exec runs through the Engine API (docker SDK) with a hijacked connection: stdin goes
straight to the process, stdout and stderr come back multiplexed in Docker's 8-byte-header
frames. A relay (socat: kind's node image ships it) carries containerd's socket over such an
exec; k3d's nodes have none, and their containerd is written with ``ctr import``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from types import TracebackType
from typing import Any, Self

import docker
import docker.errors

from nodeload.dockerapi import engine_client
from nodeload.errors import NodeError, NodeUnreachable
from nodeload.nodes.spec import NodeSpec
from nodeload.transports.base import Traffic
from nodeload.transports.bridge import RelaySockets
from nodeload.transports.execs import ExecResult

_FRAME = struct.Struct(">BxxxI")  # stream (1 stdout, 2 stderr), size


class DockerExecTransport:
    """Reach a node container's sockets through ``docker exec`` relays."""

    def __init__(self, node: NodeSpec, client: docker.DockerClient | None = None) -> None:
        """Prepare (not yet check) the container ``node.container`` (or ``node.name``)."""
        self._spec = node
        self._container = node.container or node.name
        self._client = client
        self._sockets = RelaySockets()
        self.reach = "docker-exec"

    @property
    def node(self) -> str:
        """The node's name."""
        return self._spec.name

    async def __aenter__(self) -> Self:
        def running() -> bool:
            client = self._docker()
            return bool(client.api.inspect_container(self._container)["State"]["Running"])

        try:
            up = await asyncio.to_thread(running)
        except docker.errors.NotFound as err:
            raise NodeUnreachable(f"no container {self._container!r} in the local Docker engine") from err
        except docker.errors.DockerException as err:
            raise NodeUnreachable(f"the Docker engine did not answer: {err}") from err
        if not up:
            raise NodeUnreachable(f"container {self._container!r} is not running")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._sockets.close()

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = engine_client()
        return self._client

    def executor(self) -> DockerExecutor:
        """Commands in the container, as root."""
        return DockerExecutor(self._docker(), self._container)

    def traffic(self) -> Traffic | None:
        """Nothing crosses a network: the container is on this machine."""
        return None

    async def open_socket(self, path: str) -> str:
        """A local gRPC target relayed to the container's socket ``path``.

        Raises:
            SocketUnavailable: missing socket, or NoRelay when the container has no relay program.
        """
        target, relay = await self._sockets.open(self.executor(), path)
        self.reach = f"docker-exec:{relay.label}"
        return target


class DockerExecutor:
    """Runs commands in one container through the Engine API's exec."""

    def __init__(self, client: docker.DockerClient, container: str) -> None:
        """Use ``client`` for ``container``."""
        self._client, self._container = client, container

    @property
    def label(self) -> str:
        """``docker-exec``."""
        return "docker-exec"

    async def start(self, command: str) -> DockerProcess:
        """Start ``sh -c command`` in the container."""

        def create() -> tuple[str, Any]:
            api = self._client.api
            exec_id = api.exec_create(self._container, ["sh", "-c", command], stdin=True, tty=False)["Id"]
            return exec_id, api.exec_start(exec_id, socket=True)

        try:
            exec_id, hijacked = await asyncio.to_thread(create)
        except docker.errors.DockerException as err:
            raise NodeError(f"docker exec in {self._container!r} failed: {err}") from err
        raw = getattr(hijacked, "_sock", hijacked)  # the SDK hands out a SocketIO around it
        reader, writer = await asyncio.open_connection(sock=raw)
        return DockerProcess(self._client, exec_id, reader, writer, hijacked)


class _FrameReader:
    """stdout of a multiplexed exec stream; stderr frames are kept aside."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._left = 0  # stdout bytes left in the current frame
        self.stderr = bytearray()

    async def read(self, n: int = -1) -> bytes:
        while self._left == 0:
            try:
                header = await self._reader.readexactly(_FRAME.size)
            except asyncio.IncompleteReadError:
                return b""
            stream, size = _FRAME.unpack(header)
            if stream == 1:
                self._left = size
            else:
                self.stderr += await self._reader.readexactly(size)
        want = self._left if n < 0 else min(n, self._left)
        data = await self._reader.read(want)
        if not data:
            return b""
        self._left -= len(data)
        return data


class _StreamInput:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        with contextlib.suppress(OSError):
            self._writer.write_eof()  # Docker closes the process's stdin on the half-close


class DockerProcess:
    """An :class:`~nodeload.transports.execs.ExecProcess` over a hijacked exec connection."""

    def __init__(
        self,
        client: docker.DockerClient,
        exec_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hijacked: Any,
    ) -> None:
        self._client, self._exec_id, self._writer, self._hijacked = client, exec_id, writer, hijacked
        self._stdout = _FrameReader(reader)
        self._stdin = _StreamInput(writer)

    @property
    def stdin(self) -> _StreamInput:
        return self._stdin

    @property
    def stdout(self) -> _FrameReader:
        return self._stdout

    async def wait(self) -> ExecResult:
        while await self._stdout.read(1 << 16):
            pass  # the process ends its output before Docker records its exit code

        def exit_code() -> int | None:
            info = self._client.api.exec_inspect(self._exec_id)
            return None if info.get("Running") else int(info.get("ExitCode") or 0)

        for _ in range(100):
            code = await asyncio.to_thread(exit_code)
            if code is not None:
                return ExecResult(code, self._stdout.stderr.decode(errors="replace"))
            await asyncio.sleep(0.05)
        return ExecResult(255, "docker exec did not report an exit status")

    def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            self._hijacked.close()
