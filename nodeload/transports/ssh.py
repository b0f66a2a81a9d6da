"""SSH transport: one asyncssh connection per node, its containerd socket
forwarded to a unix socket in a private (0700) local directory.

Nothing is installed or started on the node and no port is opened there:
the node's sshd connects to its own containerd socket (OpenSSH
``direct-streamlocal``), exactly like ``ssh -L local.sock:/run/containerd/containerd.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncssh

from nodeload import scratch
from nodeload.errors import (
    AuthenticationFailed,
    HostKeyRejected,
    LocalError,
    NodeUnreachable,
    UsageError,
)
from nodeload.nodes.spec import NodeSpec
from nodeload.transports.base import Traffic, tcp_traffic
from nodeload.transports.ssh_hostkeys import CheckingClient, HostKeyCheck, trust_policy

# Layers are already compressed; SSH compression would only burn CPU.
_NO_COMPRESSION = ["none"]
# AES-GCM is hardware accelerated almost everywhere; keep the others as fallbacks.
_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


_SOCKET_DIR_PREFIX = "nodeload-"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class SSHOptions:
    """How to reach nodes over SSH; defaults follow OpenSSH's."""

    identity: Path | None = None
    ssh_config: Path | None = None
    known_hosts: Path | None = None
    verify_host_keys: bool = True
    connect_timeout: float = 15.0


class SSHTransport:
    """Reach a node's unix sockets through one SSH connection."""

    def __init__(self, node: NodeSpec, options: SSHOptions | None = None) -> None:
        """Prepare (but do not open) the connection to ``node`` (its ``address`` must be set)."""
        if not node.address:
            raise UsageError(f"node {node.name} has no SSH address")
        self._spec = node
        self._node = node.name
        self._options = options or SSHOptions()
        self._settings: asyncssh.SSHClientConnectionOptions | None = None
        self._resolved()  # a bad ssh config is a usage error before anything starts
        self._conn: asyncssh.SSHClientConnection | None = None
        self._tmpdir: str | None = None
        self._listeners: list[asyncssh.SSHListener] = []

    @property
    def node(self) -> str:
        """The node as the user named it."""
        return self._node

    async def __aenter__(self) -> Self:
        self._conn = await self._connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for listener in self._listeners:
            listener.close()
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _resolved(self) -> asyncssh.SSHClientConnectionOptions:
        """The node's settings as the ssh config resolves them (HostName, Port, User, files...).

        Raises:
            NodeError: when the ssh config cannot be parsed.
        """
        if self._settings is None:
            kwargs: dict[str, Any] = {}
            if self._options.ssh_config is not None:
                kwargs["config"] = [str(self._options.ssh_config)]
            if self._spec.port:
                kwargs["port"] = self._spec.port
            if self._spec.user:
                kwargs["username"] = self._spec.user
            try:
                self._settings = asyncssh.SSHClientConnectionOptions(host=self._spec.address, **kwargs)
            except (OSError, ValueError, asyncssh.Error) as err:
                source = f"-F {self._options.ssh_config}" if self._options.ssh_config else "the ssh config"
                raise UsageError(f"{source}: {err}") from err
        return self._settings

    def _connect_kwargs(self, check: HostKeyCheck | None) -> dict[str, Any]:
        opts = self._options
        settings = self._resolved()
        kwargs: dict[str, Any] = {
            "options": settings,
            "compression_algs": _NO_COMPRESSION,
            "encryption_algs": _CIPHERS,
            "connect_timeout": opts.connect_timeout,
            "window": 8 * 1024 * 1024,
            # A node that vanishes must fail its push, not hang every other node's report.
            "keepalive_interval": 15,
            "keepalive_count_max": 3,
            # Whatever the ssh config says: a node (or an impostor) never gets the user's agent
            # or X display through the channels nodeload opens.
            "agent_forwarding": False,
            "x11_forwarding": False,
            "known_hosts": check.match if check else None,
        }
        if check is not None:
            kwargs["client_factory"] = lambda: CheckingClient(check)
        extra = [str(key) for key in (self._spec.identity, opts.identity) if key is not None]
        if extra:
            # -i (and an inventory's key) add keys; the agent and ssh config IdentityFile keys still apply.
            kwargs["client_keys"] = [*extra, *(settings.client_keys or [])]
        return kwargs

    def _host_key_check(self) -> HostKeyCheck | None:
        """The check of this node's host key (None with --insecure-skip-host-key-check)."""
        if not self._options.verify_host_keys:
            return None
        settings = self._resolved()
        policy = trust_policy(self._options.known_hosts, settings.config.get_options(False), _local_user())
        return HostKeyCheck(policy, settings.host_key_alias or settings.host, settings.port)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        check = self._host_key_check()
        try:
            return await asyncssh.connect(self._resolved().host, **self._connect_kwargs(check))
        except asyncssh.HostKeyNotVerifiable as err:
            reason = check.rejection(self._node) if check else str(err)
            raise HostKeyRejected(reason) from err
        except asyncssh.PermissionDenied as err:
            raise AuthenticationFailed(
                f"SSH authentication failed ({err.reason}). Load the key into ssh-agent, "
                "name it with -i FILE or IdentityFile in ~/.ssh/config, and check the user name."
            ) from err
        except asyncssh.KeyImportError as err:
            raise AuthenticationFailed(f"cannot load the SSH key: {err}") from err
        except asyncssh.DisconnectError as err:
            raise NodeUnreachable(f"SSH connection refused: {err.reason}") from err
        except (TimeoutError, OSError) as err:
            reason = str(err) or type(err).__name__
            raise NodeUnreachable(f"cannot connect over SSH: {reason}") from err

    def traffic(self) -> Traffic | None:
        """What the SSH connection's TCP socket carried (kernel counters)."""
        return tcp_traffic(self._conn.get_extra_info("socket")) if self._conn else None

    async def can_open(self, path: str) -> bool:
        """Open and close a stream to ``path`` on the node."""
        try:
            _, writer = await self._require_conn().open_unix_connection(path)
        except (asyncssh.ChannelOpenError, asyncssh.Error):
            return False
        writer.close()
        return True

    async def why_unusable(self, path: str) -> str | None:
        """Ask the node, through a short command, whether ``path`` exists and who we are."""
        quoted, parent = shlex.quote(path), shlex.quote(os.path.dirname(path) or "/")
        # "hidden": the directory is there but the user may not enter it, so [ -S ] cannot see the
        # socket (it used to be reported as missing); "refused": the user may read and write the
        # socket, so opening it failed for another reason (it used to be blamed on permissions).
        cmd = (
            f"if [ -S {quoted} ]; then if [ -r {quoted} ] && [ -w {quoted} ]; then echo refused; "
            f"else echo denied; fi; elif [ -d {parent} ] && ! [ -x {parent} ]; then echo hidden; "
            "else echo missing; fi; id -un"
        )
        try:
            result = await asyncio.wait_for(self._require_conn().run(cmd, check=False), 10)
        except (TimeoutError, asyncssh.Error, OSError):
            return None
        lines = str(result.stdout or "").split()
        if len(lines) < 2:
            return None
        state, user = lines[0], lines[1]
        if state == "missing":
            return f"{path} does not exist on the node"
        if state == "refused":
            return (
                f"{path} exists and user {user!r} may read and write it, but it cannot be opened: is "
                "containerd running, and does the node's sshd allow AllowStreamLocalForwarding?"
            )
        if state == "hidden":
            return (
                f"{path} is out of reach: user {user!r} may not enter {os.path.dirname(path)}, and "
                "containerd's socket needs read and write access (log in as root, or give the user access)"
            )
        return (
            f"{path} exists but user {user!r} may not open it: containerd's socket needs read and write "
            "access (log in as root, or give the user the socket's group)"
        )

    async def forward(self, path: str) -> str:
        """Listen on a private local unix socket that tunnels to ``path``.

        asyncssh's own forwarder carries the bytes (faster than pumping them
        ourselves); the socket lives in a 0700 directory only we can enter.
        """
        try:
            if self._tmpdir is None:
                scratch.sweep(tempfile.gettempdir(), _SOCKET_DIR_PREFIX)  # left by killed runs
                self._tmpdir = scratch.mkdtemp(_SOCKET_DIR_PREFIX)  # 0700
            local = os.path.join(self._tmpdir, f"sock{len(self._listeners)}")
            listener = await self._require_conn().forward_local_path(local, path)
            os.chmod(local, 0o600)
        except OSError as err:  # e.g. "AF_UNIX path too long" for a deep TMPDIR
            raise LocalError(
                f"cannot create the local end of the tunnel in {self._tmpdir or tempfile.gettempdir()}: "
                f"{err.strerror or err} (set TMPDIR to a short, writable directory)"
            ) from err
        self._listeners.append(listener)
        return f"unix:{local}"

    def _require_conn(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise RuntimeError("SSHTransport used outside its context")
        return self._conn
