"""A node's unix socket reached through a relay process run over an exec channel.

When SSH will not forward a stream to the socket (``AllowStreamLocalForwarding no``),
when the login may not open it (it belongs to root), or when the node is a container
reached with ``docker exec``, a small relay on the node does it: the first of ``socat``,
OpenBSD ``nc -U`` and ``python3`` found there connects its stdin/stdout to the socket,
under ``sudo -n`` when the login lacks permission and the node allows becoming root.
Locally, each connection to a private unix socket (0600, in a 0700 directory) starts one
relay, so gRPC sees an ordinary socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
from dataclasses import dataclass

from nodeload import scratch
from nodeload.errors import LocalError, NodeError
from nodeload.transports.execs import ExecProcess, Executor, keyvalues, run_text
from nodeload.wording import setting

CHUNK = 256 * 1024

# The relay programs, best first: socat and nc are small C programs; python3 is everywhere else.
_PYTHON_RELAY = """
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
def up():
    while True:
        data = os.read(0, 262144)
        if not data:
            break
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(262144)
    if not data:
        break
    os.write(1, data)
"""
_RELAYS = {
    "socat": lambda path: f"socat - UNIX-CONNECT:{shlex.quote(path)}",
    "nc": lambda path: f"nc -U {shlex.quote(path)}",
    "python3": lambda path: f"python3 -c {shlex.quote(_PYTHON_RELAY)} {shlex.quote(path)}",
}
# Whether the login is root, may use passwordless sudo, or would be asked for a password.
SUDO_PROBE = """if [ "$(id -u)" = 0 ]; then echo sudo=root
elif command -v sudo >/dev/null 2>&1; then
  if sudo -n true >/dev/null 2>&1; then echo sudo=ok; else echo sudo=password; fi
else echo sudo=none; fi
echo user="$(id -un)"
"""
# One round trip tells everything: the socket's state for this login, the relays, sudo.
# OpenBSD nc lists -U in its help (Debian's indents with tabs); other ncs have no -U.
_PROBE = (
    """p={path}
if [ -S "$p" ]; then
  if [ -r "$p" ] && [ -w "$p" ]; then echo access=rw; else echo access=denied; fi
elif [ -e "$p" ]; then echo access=notsocket
elif [ -d "$(dirname "$p")" ] && ! [ -x "$(dirname "$p")" ]; then echo access=hidden
else echo access=missing; fi
command -v socat >/dev/null 2>&1 && echo relay=socat
if command -v nc >/dev/null 2>&1 && nc -h 2>&1 | grep -qE -- '[[:space:]]-U[[:space:]]'
then echo relay=nc; fi
command -v python3 >/dev/null 2>&1 && echo relay=python3
if [ -S "$p" ] && [ -r "$p" ] && [ -w "$p" ]; then
  if command -v socat >/dev/null 2>&1; then
    if socat -u OPEN:/dev/null UNIX-CONNECT:"$p" 2>/dev/null
    then echo connect=ok; else echo connect=refused; fi
  elif command -v python3 >/dev/null 2>&1; then
    if python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$p" 2>/dev/null
    then echo connect=ok; else echo connect=refused; fi
  fi
fi
"""
    + SUDO_PROBE
)


class SocketUnavailable(NodeError):
    """This socket cannot be reached on the node (``missing``: it does not exist there)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        """``message`` says why; ``missing`` lets callers try the next candidate path quietly."""
        super().__init__(message)
        self.missing = missing


class NoRelay(SocketUnavailable):
    """The node has no relay program: nothing can carry a stream to its sockets."""


@dataclass(frozen=True)
class Probe:
    """What the node said about a socket path, its relay programs and sudo."""

    access: str  # rw | denied | hidden | notsocket | missing
    relays: tuple[str, ...]
    sudo: str  # root | ok | password | none
    user: str
    connect: str = "untested"  # ok | refused: whether the login could connect to it just now

    @classmethod
    def parse(cls, text: str) -> Probe:
        """Read the probe script's ``key=value`` lines."""
        values = keyvalues(text)
        return cls(
            access=values.get("access", ["missing"])[0],
            relays=tuple(values.get("relay", [])),
            sudo=values.get("sudo", ["none"])[0],
            user=values.get("user", ["?"])[0],
            connect=values.get("connect", ["untested"])[0],
        )


@dataclass(frozen=True)
class Relay:
    """How to relay to one socket: which program, and whether through ``sudo -n``."""

    program: str
    sudo: bool

    @property
    def label(self) -> str:
        """``socat``, ``sudo:nc``...: the part of the transport name that says how."""
        return f"sudo:{self.program}" if self.sudo else self.program

    def command(self, path: str) -> str:
        """The shell command that relays stdin/stdout to ``path``."""
        relay = _RELAYS[self.program](path)
        return f"exec sudo -n {relay}" if self.sudo else f"exec {relay}"


async def probe(executor: Executor, path: str) -> Probe:
    """Ask the node about ``path`` (one command).

    Raises:
        NodeError: when the node will not run it.
    """
    status, out, err = await run_text(executor, _PROBE.format(path=shlex.quote(path)))
    if status != 0 and "access=" not in out:
        raise NodeError(f"cannot run commands on the node ({err.strip() or f'exit status {status}'})")
    return Probe.parse(out)


def choose_relay(found: Probe, path: str, *, may_sudo: bool) -> Relay:
    """The relay for ``path``, or why there is none.

    Raises:
        SocketUnavailable: missing socket, no permission (and no usable sudo), no relay program.
    """
    if found.access in ("missing", "notsocket"):
        what = "does not exist" if found.access == "missing" else "is not a socket"
        raise SocketUnavailable(f"{path} {what} on the node", missing=True)
    if found.connect == "refused":
        raise SocketUnavailable(
            f"{path} exists and user {found.user!r} may read and write it, but nothing answers on it: "
            "is containerd running?"
        )
    needs_root = found.access in ("denied", "hidden") and found.sudo != "root"
    if needs_root:
        if not may_sudo:
            where = (
                f"is out of reach: user {found.user!r} may not enter {os.path.dirname(path)}"
                if found.access == "hidden"
                else f"exists but user {found.user!r} may not open it"
            )
            raise SocketUnavailable(
                f"{path} {where}: containerd's socket needs read and write access (log in as root, "
                f"give the user the socket's group, or allow passwordless sudo with {setting('sudo')} or "
                "ansible_become)"
            )
        if found.sudo == "password":
            raise SocketUnavailable(
                f"{path}: user {found.user!r} may not open it, and sudo on the node wants a password; "
                "nodeload only uses passwordless sudo (sudo -n): allow it for this user, or log in as root"
            )
        if found.sudo == "none":
            raise SocketUnavailable(f"{path}: user {found.user!r} may not open it, and the node has no sudo")
    if not found.relays:
        raise NoRelay(f"{path}: the node has none of socat, OpenBSD nc or python3 to relay to the socket")
    return Relay(found.relays[0], sudo=needs_root)


SOCKET_DIR_PREFIX = "nodeload-"


class RelaySockets:
    """The relayed sockets of one transport: a private directory of local unix sockets, each
    relayed through the transport's executor to a socket on the node."""

    def __init__(self) -> None:
        self._servers: list[RelayServer] = []
        self._tmpdir: str | None = None

    async def open(self, executor: Executor, path: str) -> tuple[str, Relay]:
        """A gRPC target for the node's ``path``, and the relay that carries it.

        Raises:
            SocketUnavailable: missing socket, or NoRelay when the node has no relay program.
            LocalError: when the local socket cannot be created.
        """
        relay = choose_relay(await probe(executor, path), path, may_sudo=False)
        try:
            if self._tmpdir is None:
                self._tmpdir = scratch.mkdtemp(SOCKET_DIR_PREFIX)
            server = RelayServer(executor, relay, path, f"{self._tmpdir}/sock{len(self._servers)}")
            target = await server.start()
        except OSError as err:
            raise LocalError(f"cannot create the local end of the relay: {err.strerror or err}") from err
        self._servers.append(server)
        return target, relay

    async def close(self) -> None:
        """End every relay and remove the directory; the object may be used again."""
        for server in self._servers:
            with contextlib.suppress(Exception):  # the node may be gone already
                await server.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._servers, self._tmpdir = [], None


class RelayServer:
    """A private local unix socket whose connections each run a relay on the node."""

    def __init__(self, executor: Executor, relay: Relay, remote: str, local: str) -> None:
        """Relay connections to ``local`` to the node's ``remote`` socket."""
        self._executor, self._relay, self._remote, self._local = executor, relay, remote, local
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen; the gRPC target for the local socket."""
        self._server = await asyncio.start_unix_server(self._connected, self._local)
        os.chmod(self._local, 0o600)
        return f"unix:{self._local}"

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        process: ExecProcess | None = None
        try:
            process = await self._executor.start(self._relay.command(self._remote))
            await asyncio.gather(_upstream(reader, process), _downstream(process, writer))
        except (OSError, NodeError, asyncio.IncompleteReadError):
            pass  # the gRPC client sees the connection close and reports it
        finally:
            if process is not None:
                process.close()
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and end every relay."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


async def _upstream(reader: asyncio.StreamReader, process: ExecProcess) -> None:
    while data := await reader.read(CHUNK):
        process.stdin.write(data)
        await process.stdin.drain()
    process.stdin.write_eof()


async def _downstream(process: ExecProcess, writer: asyncio.StreamWriter) -> None:
    while data := await process.stdout.read(CHUNK):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
