"""SSH transport: one asyncssh connection per node, its containerd socket
forwarded to a unix socket in a private (0700) local directory.

Nothing is installed or started on the node and no port is opened there:
the node's sshd connects to its own containerd socket (OpenSSH
``direct-streamlocal``), exactly like ``ssh -L local.sock:/run/containerd/containerd.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncssh

from nodeload.errors import (
    AuthenticationFailed,
    HostKeyRejected,
    NodeUnreachable,
    UsageError,
)
from nodeload.transports.base import Traffic, tcp_traffic

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


@dataclass(frozen=True)
class NodeAddress:
    """``[USER@]HOST[:PORT]`` as written on the command line."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        text = f"{self.user}@" if self.user else ""
        text += f"[{self.host}]" if ":" in self.host else self.host
        return text + (f":{self.port}" if self.port else "")


def parse_node(text: str) -> NodeAddress:
    """Parse ``[USER@]HOST[:PORT]``; HOST may be an ~/.ssh/config alias or ``[IPv6]``."""
    user, _, hostport = text.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    elif ":" in hostport and not _is_ip(hostport):
        raise UsageError(f"invalid node {text!r}: write an IPv6 address with a port as [ADDR]:PORT")
    if not host or (port is not None and not port.isdigit()) or any(c.isspace() for c in text):
        raise UsageError(f"invalid node {text!r}: expected [USER@]HOST[:PORT]")
    return NodeAddress(host=host, user=user or None, port=int(port) if port else None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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

    def __init__(self, node: str, options: SSHOptions | None = None) -> None:
        """Prepare (but do not open) the connection to ``node``."""
        self._node = node
        self._address = parse_node(node)
        self._options = options or SSHOptions()
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

    def _connect_kwargs(self) -> dict[str, Any]:
        opts = self._options
        kwargs: dict[str, Any] = {
            "compression_algs": _NO_COMPRESSION,
            "encryption_algs": _CIPHERS,
            "connect_timeout": opts.connect_timeout,
            "window": 8 * 1024 * 1024,
            # A node that vanishes must fail its push, not hang every other node's report.
            "keepalive_interval": 15,
            "keepalive_count_max": 3,
        }
        if opts.ssh_config is not None:
            kwargs["config"] = [str(opts.ssh_config)]
        if self._address.port:
            kwargs["port"] = self._address.port
        if self._address.user:
            kwargs["username"] = self._address.user
        if not opts.verify_host_keys:
            kwargs["known_hosts"] = None
        elif opts.known_hosts is not None:
            kwargs["known_hosts"] = str(opts.known_hosts)
        if opts.identity is not None:
            # -i adds a key; the agent and ~/.ssh/config IdentityFile keys still apply.
            defaults = asyncssh.SSHClientConnectionOptions(
                host=self._address.host,
                **{k: v for k, v in kwargs.items() if k in ("config", "username", "port")},
            )
            kwargs["client_keys"] = [str(opts.identity), *(defaults.client_keys or [])]
        return kwargs

    async def _connect(self) -> asyncssh.SSHClientConnection:
        host = self._address.host
        try:
            return await asyncssh.connect(host, **self._connect_kwargs())
        except asyncssh.HostKeyNotVerifiable as err:
            raise HostKeyRejected(await self._host_key_message(str(err))) from err
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

    async def _host_key_message(self, reason: str) -> str:
        """Describe the rejected key with its fingerprint, the way ssh does."""
        fingerprint = "unknown"
        with contextlib.suppress(Exception):
            kwargs = {k: v for k, v in self._connect_kwargs().items() if k in ("config", "port")}
            key = await asyncssh.get_server_host_key(self._address.host, **kwargs)
            if key is not None:
                fingerprint = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
        port = self._address.port or 22
        if self._listed_host_keys():
            # Like OpenSSH, a key that differs from the one on record is not "new": it may be an
            # impostor, so never suggest appending it (that would trust both keys from then on).
            entry = self._address.host if port == 22 else f"[{self._address.host}]:{port}"
            return (
                f"HOST KEY CHANGED: known_hosts lists a different key for this host, and "
                f"it now offers {fingerprint}. Nothing was sent. Someone may be impersonating the node, "
                "or it was reinstalled: check the fingerprint on the node (ssh-keygen -lf "
                f"/etc/ssh/ssh_host_*.pub), then replace the old entry (ssh-keygen -R '{entry}')."
            )
        return (
            f"host key not trusted ({reason}); it offered {fingerprint}. Nothing was sent. "
            f"If you trust it, add it with `ssh-keyscan -p {port} {self._address.host} "
            ">> ~/.ssh/known_hosts` (or use --known-hosts FILE); --insecure-skip-host-key-check "
            "disables the check."
        )

    def _listed_host_keys(self) -> list[asyncssh.SSHKey]:
        """The keys known_hosts already holds for this node (none: the host is simply unknown).

        Resolves the files and host name the way asyncssh.connect does: --known-hosts, else
        the ssh config's UserKnownHostsFile, else ~/.ssh/known_hosts; HostName/HostKeyAlias.
        """
        wanted = ("config", "port", "username", "known_hosts")
        kwargs = {k: v for k, v in self._connect_kwargs().items() if k in wanted}
        try:
            options = asyncssh.SSHClientConnectionOptions(host=self._address.host, **kwargs)
            files = options.known_hosts or str(Path("~", ".ssh", "known_hosts").expanduser())
            host = options.host_key_alias or options.host
            port = options.port if options.port != 22 else None
            keys = asyncssh.match_known_hosts(files, host, host if _is_ip(host) else "", port)[0]
        except (OSError, ValueError, asyncssh.Error):
            return []  # unreadable or unparsable: report the key as untrusted, as before
        return list(keys)

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
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="nodeload-")  # mkdtemp makes it 0700
        local = os.path.join(self._tmpdir, f"sock{len(self._listeners)}")
        listener = await self._require_conn().forward_local_path(local, path)
        os.chmod(local, 0o600)
        self._listeners.append(listener)
        return f"unix:{local}"

    def _require_conn(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise RuntimeError("SSHTransport used outside its context")
        return self._conn
