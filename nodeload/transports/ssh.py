"""SSH transport: one connection per node; its containerd socket reached the best way the node allows.

1. ``ssh-forward``: the node's sshd connects to the socket itself (OpenSSH
   ``direct-streamlocal``, like ``ssh -L local.sock:/run/containerd/containerd.sock``), and the
   stream appears on a private local unix socket. Nothing runs on the node but one ``true``
   per connection (see ``_NODELAY_COMMAND``).
2. ``ssh-exec:RELAY``: when sshd refuses stream forwarding or the login may not open the
   socket, a relay program on the node (socat, nc -U, python3; under ``sudo -n`` when allowed)
   carries the stream over an exec channel (see ``bridge.py``).
3. When the node has no relay at all, the push falls back to ``ctr import``
   over an exec channel (``stores/ctr_import.py``).

Nothing is installed or left on the node and no port is opened there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import asyncssh

from nodeload import scratch
from nodeload.errors import LocalError, NodeError, UsageError
from nodeload.nodes.spec import NodeSpec
from nodeload.transports.base import Traffic, tcp_traffic
from nodeload.transports.bridge import RelayServer, choose_relay, probe
from nodeload.transports.execs import ExecResult
from nodeload.transports.ssh_connect import Connection, Destination, SSHOptions, connect, resolve

__all__ = ["SSHExecutor", "SSHOptions", "SSHTransport"]

_SOCKET_DIR_PREFIX = "nodeload-"
# A kept connection used this recently is trusted without a round trip (see SSHTransport._answers).
_IDLE_TRUSTED = 30.0
_ANSWER_SECONDS = 5.0
# sshd turns Nagle's algorithm off (TCP_NODELAY) for a connection only once a session on it runs
# a command. Until then each small reply it sends behind unacknowledged data waits for the
# client's delayed ACK (40 ms on Linux): at the end of every upload and between the messages of
# a stream. One command at connect time, alongside the first forward, switches it off.
_NODELAY_COMMAND = "true"
_NODELAY_SECONDS = 10.0
Closer = asyncssh.SSHListener | RelayServer


class SSHTransport:
    """Reach a node's unix sockets through one SSH connection."""

    def __init__(self, node: NodeSpec, options: SSHOptions | None = None) -> None:
        """Prepare (but do not open) the connection to ``node`` (its ``address`` must be set).

        Raises:
            UsageError: when the node has no address or the ssh config cannot be read for it.
        """
        if not node.address:
            raise UsageError(f"node {node.name} has no SSH address")
        self._spec = node
        self._options = options or SSHOptions()
        self._dest = Destination(node.address, node.user, node.port, node.identity, node.name, node.jump)
        # Every hop as the connection will use it; a bad ssh config is a usage error before anything
        # starts. Resolved again at each (re)connection: the ssh config may have changed since.
        self.route = resolve(self._dest, self._options)
        self._route_used = False
        self._connection: Connection | None = None
        self._tmpdir: str | None = None
        self._closers: list[Closer] = []
        self.reach = "ssh"
        # A duplicate of the TCP socket's descriptor: its kernel counters stay readable after the
        # connection drops (asyncio closes its own descriptor then), for the traffic of a lost session.
        self._counter: socket.socket | None = None
        self._carried = Traffic(0, 0)  # what earlier sessions of this transport carried
        # Kept open between sessions (a persistent session's pool): the connection, and the local
        # end of each socket opened through it, stay until close() or until the connection drops.
        self.keep_open = False
        self._closed: asyncio.Future[None] | None = None
        self._nodelay: asyncio.Future[None] | None = None
        self._opened: dict[str, tuple[str, str]] = {}  # socket path -> (reach, local gRPC target)
        self._last_used = 0.0

    @property
    def node(self) -> str:
        """The node's name."""
        return self._spec.name

    async def __aenter__(self) -> Self:
        """Connect; a transport may be entered again after it is left (a retry reconnects)."""
        if self._alive() and (time.monotonic() - self._last_used < _IDLE_TRUSTED or await self._answers()):
            return self  # kept open, and still alive
        await self.close()
        if self._route_used:
            self.route = resolve(self._dest, self._options)
        self._route_used = True
        self._connection = await connect(self._dest, self._options, self.route)
        self._closed = asyncio.ensure_future(self._connection.conn.wait_closed())
        self._nodelay = asyncio.ensure_future(_ask_for_nodelay(self._connection.conn))
        first = self._connection.jumps[0] if self._connection.jumps else self._connection.conn
        with contextlib.suppress(OSError, AttributeError):
            self._counter = socket.socket(fileno=os.dup(first.get_extra_info("socket").fileno()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._last_used = time.monotonic()
        if not (self.keep_open and exc_type is None):
            await self.close()

    @property
    def is_open(self) -> bool:
        """Whether the connection is open (kept open between sessions, or in one)."""
        return self._connection is not None and self._closed is not None and not self._closed.done()

    def _alive(self) -> bool:
        """Whether a kept connection still stands, as far as its socket tells. Between the pushes
        of a persistent session no event loop runs to see the node hang up, so the kernel is
        asked: a hang-up or an error on the socket, even behind unread data, means it is gone."""
        if not self.is_open:
            return False
        if self._counter is None:
            return True
        poller = select.poll()
        poller.register(self._counter, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return not poller.poll(0)

    async def _answers(self) -> bool:
        """Whether the node still answers on a connection kept idle: a connection dropped without
        a word (a NAT or firewall forgetting it) looks open until used. One round trip: a channel
        open to the containerd socket, which sshd answers whether or not it allows it."""
        try:
            await asyncio.wait_for(self._forwards("/run/containerd/containerd.sock"), _ANSWER_SECONDS)
        except (TimeoutError, NodeError, OSError):
            return False
        return True  # forwarded or refused: either way the node answered

    async def close(self) -> None:
        """Close the connection and every local socket end opened through it."""
        if self._connection is None:
            return
        self._carried = self.traffic() or self._carried
        for closer in self._closers:
            with contextlib.suppress(Exception):  # the connection may be gone already
                if isinstance(closer, RelayServer):
                    await closer.close()
                else:
                    closer.close()
        if self._connection is not None:
            await self._connection.close()
        if self._counter is not None:
            self._counter.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        for task in (self._closed, self._nodelay):
            if task is not None:
                task.cancel()
        self._connection, self._counter, self._tmpdir, self._closers = None, None, None, []
        self._closed, self._nodelay, self._opened = None, None, {}

    def traffic(self) -> Traffic | None:
        """What the SSH connections to the node carried, every session of this transport together
        (kernel TCP counters of the first hop)."""
        now = tcp_traffic(self._counter) if self._counter is not None else None
        if now is None:
            return self._carried if self._carried.sent or self._carried.received else None
        return Traffic(self._carried.sent + now.sent, self._carried.received + now.received)

    def executor(self) -> SSHExecutor:
        """Commands on the node through exec channels of this connection."""
        return SSHExecutor(self._conn())

    async def open_socket(self, path: str) -> str:
        """A local gRPC target for the node's socket ``path``: forwarded if sshd allows, else relayed.

        Raises:
            SocketUnavailable: with the reason (``missing`` when the socket does not exist).
        """
        if path in self._opened:  # kept open from an earlier session of this connection
            self.reach, target = self._opened[path]
            if self._tmpdir is not None:  # in use: other runs' sweeps take day-old directories
                with contextlib.suppress(OSError):
                    os.utime(self._tmpdir)
            return target
        target = await self._open_socket(path)
        if self.keep_open:
            self._opened[path] = (self.reach, target)
        return target

    async def _open_socket(self, path: str) -> str:
        if await self._forwards(path):
            self.reach = "ssh-forward"
            return await self._serve(lambda local: self._conn().forward_local_path(local, path))
        # sshd gives the same answer when it refuses stream forwarding and when the socket cannot be
        # opened: ask the node what the socket is, who we are there, and what could relay to it.
        found = await probe(self.executor(), path)
        relay = choose_relay(found, path, may_sudo=self._spec.become)
        self.reach = f"ssh-exec:{relay.label}"
        executor = self.executor()
        return await self._serve(lambda local: self._start_relay(RelayServer(executor, relay, path, local)))

    async def _start_relay(self, server: RelayServer) -> RelayServer:
        await server.start()
        return server

    async def _forwards(self, path: str) -> bool:
        """Whether sshd opens a stream to ``path`` for us."""
        try:
            _, writer = await self._conn().open_unix_connection(path)
        except asyncssh.ChannelOpenError:
            return False
        except asyncssh.Error as err:
            raise NodeError(f"the SSH connection failed: {err}") from err
        writer.close()
        return True

    async def _serve(self, listen: Callable[[str], Awaitable[Closer]]) -> str:
        """Listen on a private local unix socket (0600 in a 0700 directory); its gRPC target."""
        try:
            if self._tmpdir is None:
                scratch.sweep_temp()  # what killed runs left
                self._tmpdir = scratch.mkdtemp(_SOCKET_DIR_PREFIX)  # 0700
            local = os.path.join(self._tmpdir, f"sock{len(self._closers)}")
            closer = await listen(local)
            os.chmod(local, 0o600)
        except OSError as err:  # e.g. "AF_UNIX path too long" for a deep TMPDIR
            raise LocalError(
                f"cannot create the local end of the tunnel in {self._tmpdir or scratch.temp_root()}: "
                f"{err.strerror or err} (set TMPDIR to a short, writable directory)"
            ) from err
        self._closers.append(closer)
        return f"unix:{local}"

    def _conn(self) -> asyncssh.SSHClientConnection:
        if self._connection is None:
            raise RuntimeError("SSHTransport used outside its context")
        return self._connection.conn


async def _ask_for_nodelay(conn: asyncssh.SSHClientConnection) -> None:
    """Run ``_NODELAY_COMMAND`` once; a node that refuses commands keeps Nagle on, nothing else."""
    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        command = conn.run(_NODELAY_COMMAND, check=False, stdin=asyncssh.DEVNULL)
        await asyncio.wait_for(command, _NODELAY_SECONDS)


class SSHExecutor:
    """Runs commands on the node over exec channels of one SSH connection."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        """Use ``conn``."""
        self._conn = conn

    @property
    def label(self) -> str:
        """``ssh-exec``."""
        return "ssh-exec"

    async def start(self, command: str) -> _SSHProcess:
        """Start ``command`` in the login's shell on the node."""
        try:
            process = await self._conn.create_process(command, encoding=None)
        except (asyncssh.Error, OSError) as err:
            raise NodeError(f"the node would not run a command over SSH: {err}") from err
        return _SSHProcess(process)


class _SSHProcess:
    """An :class:`~nodeload.transports.execs.ExecProcess` over an asyncssh process."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._process = process
        self._stderr = b""

    @property
    def stdin(self) -> asyncssh.SSHWriter[bytes]:
        return self._process.stdin

    @property
    def stdout(self) -> asyncssh.SSHReader[bytes]:
        return self._process.stdout

    async def wait(self) -> ExecResult:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._stderr += await self._process.stderr.read()
        completed = await self._process.wait(check=False)
        status = completed.exit_status if completed.exit_status is not None else 255
        return ExecResult(status, self._stderr.decode(errors="replace"))

    def close(self) -> None:
        self._process.close()
