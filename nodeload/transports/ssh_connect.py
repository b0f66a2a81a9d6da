"""Opening an SSH connection to a node the way OpenSSH would, with nodeload's own safety rules.

The node's settings come from the ssh config (HostName, Port, User, IdentityFile,
ProxyJump, ProxyCommand...), its host key is checked by nodeload (``ssh_hostkeys``), and
nothing of the user's is forwarded. A jump host (``ProxyJump``, ``-J``) is connected to
first, with the same rules and its own host key checked, and the node is reached through it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from nodeload.addresses import refused, ssh_name_problem
from nodeload.errors import AuthenticationFailed, HostKeyRejected, NodeUnreachable, UsageError
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
_MAX_JUMPS = 8
USER_CONFIG = Path("~/.ssh/config")
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")


@dataclass(frozen=True)
class SSHOptions:
    """How to reach nodes over SSH; defaults follow OpenSSH's."""

    identity: Path | None = None
    ssh_config: Path | None = None
    known_hosts: Path | None = None
    verify_host_keys: bool = True
    connect_timeout: float = 15.0
    jump: str | None = None  # -J [USER@]HOST[:PORT][,...]: overrides the config's ProxyJump


@dataclass(frozen=True)
class Destination:
    """Where one SSH hop goes, before the ssh config fills in the rest."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    label: str = ""  # how errors name it (the node's name, or "jump host X")


@dataclass
class Connection:
    """An open connection to a node and the jump hosts it goes through (closed together)."""

    conn: asyncssh.SSHClientConnection
    jumps: list[asyncssh.SSHClientConnection] = field(default_factory=list)

    async def close(self) -> None:
        """Close the node's connection, then its jump hosts'."""
        for conn in (self.conn, *reversed(self.jumps)):
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def local_user() -> str:
    """The local login name, for ``%u`` and as SSH's default user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def config_files(options: SSHOptions) -> list[str]:
    """The ssh config files read, as ssh reads them: ``-F FILE`` alone, else ``~/.ssh/config``
    and the system's, those that exist. (asyncssh, left alone, reads only ~/.ssh/config and only
    when it connects: read here, the host-key check and the connection see the same settings.)"""
    if options.ssh_config is not None:
        return [str(options.ssh_config)]
    return [str(f) for f in (USER_CONFIG.expanduser(), SYSTEM_CONFIG) if os.access(f, os.R_OK)]


def resolve(dest: Destination, options: SSHOptions) -> asyncssh.SSHClientConnectionOptions:
    """The hop's settings as the ssh config resolves them.

    Raises:
        UsageError: when the ssh config cannot be parsed for this host.
    """
    kwargs: dict[str, Any] = {"config": config_files(options)}
    if dest.port:
        kwargs["port"] = dest.port
    if dest.user:
        kwargs["username"] = dest.user
    try:
        return asyncssh.SSHClientConnectionOptions(host=dest.host, **kwargs)
    except (OSError, ValueError, asyncssh.Error) as err:
        source = f"-F {options.ssh_config}" if options.ssh_config else "the ssh config"
        raise UsageError(f"{source}: {err}") from err


def parse_destination(text: str, label: str) -> Destination:
    """``[USER@]HOST[:PORT]`` (or ``ssh://`` form) of a jump host.

    Raises:
        UsageError: when it is not of that form.
    """
    from nodeload.nodes.listed import parse_node  # nodes/ imports transports/: import late

    spec = parse_node(text.removeprefix("ssh://"))
    assert spec.address is not None
    return Destination(spec.address, spec.user, spec.port, label=label)


async def connect(dest: Destination, options: SSHOptions) -> Connection:
    """Connect to ``dest`` (through its jump hosts, if any), checking every host key.

    Raises:
        NodeError: HostKeyRejected, AuthenticationFailed or NodeUnreachable, naming the hop.
        UsageError: a host or user name that could be read as an option or a shell word.
    """
    _check_names(dest)
    settings = resolve(dest, options)
    jumps: list[asyncssh.SSHClientConnection] = []
    try:
        tunnel = None
        for i, hop in enumerate(_jump_chain(settings, options)):
            if i >= _MAX_JUMPS:
                raise UsageError(f"{dest.label}: more than {_MAX_JUMPS} jump hosts")
            _check_names(hop)
            hop_settings = resolve(hop, options)
            jumps.append(await _open(hop, hop_settings, options, tunnel, jump=True))
            tunnel = jumps[-1]
        return Connection(await _open(dest, settings, options, tunnel, jump=False), jumps)
    except BaseException:
        await Connection(jumps[-1], jumps[:-1]).close() if jumps else None
        raise


def _check_names(dest: Destination) -> None:
    """Refuse names ssh could take for options or a ProxyCommand could run: every node source
    checks its own, this is the last line for all of them."""
    for what, value in (("host", dest.host), ("user", dest.user)):
        why = None if value is None else ssh_name_problem(value)
        if value is not None and why:
            raise UsageError(f"{dest.label}: {refused(what, value, why)}")


def _jump_chain(settings: asyncssh.SSHClientConnectionOptions, options: SSHOptions) -> list[Destination]:
    """The jump hosts, first hop first: ``-J``, else the config's ProxyJump (``none``: no jump)."""
    text = options.jump or settings.config.get("ProxyJump")
    if not text or str(text).lower() == "none":
        return []
    return [parse_destination(hop.strip(), f"jump host {hop.strip()}") for hop in str(text).split(",")]


async def _open(
    dest: Destination,
    settings: asyncssh.SSHClientConnectionOptions,
    options: SSHOptions,
    tunnel: asyncssh.SSHClientConnection | None,
    *,
    jump: bool,
) -> asyncssh.SSHClientConnection:
    check = _host_key_check(settings, options)
    kwargs = _connect_kwargs(dest, settings, options, check)
    # Ours, never asyncssh's own reading of ProxyJump: that hop's host key is checked above.
    kwargs["tunnel"] = tunnel
    where = f"{dest.label}: " if jump else ""
    try:
        return await asyncssh.connect(settings.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as err:
        raise HostKeyRejected(where + (check.rejection(dest.label) if check else str(err))) from err
    except asyncssh.PermissionDenied as err:
        raise AuthenticationFailed(
            f"{where}SSH authentication failed ({err.reason}). Load the key into ssh-agent, "
            "name it with -i FILE or IdentityFile in ~/.ssh/config, and check the user name."
        ) from err
    except asyncssh.KeyImportError as err:
        raise AuthenticationFailed(f"{where}cannot load the SSH key: {err}") from err
    except asyncssh.ChannelOpenError as err:  # the jump host would not connect onwards
        raise NodeUnreachable(f"the jump host could not reach {settings.host}: {err.reason}") from err
    except asyncssh.DisconnectError as err:
        raise NodeUnreachable(f"{where}SSH connection refused: {err.reason}") from err
    except (TimeoutError, OSError) as err:
        reason = str(err) or type(err).__name__
        raise NodeUnreachable(f"{where}cannot connect over SSH: {reason}") from err


def _host_key_check(
    settings: asyncssh.SSHClientConnectionOptions, options: SSHOptions
) -> HostKeyCheck | None:
    """The check of this hop's host key (None with --insecure-skip-host-key-check)."""
    if not options.verify_host_keys:
        return None
    policy = trust_policy(options.known_hosts, settings.config.get_options(False), local_user())
    alias = settings.host_key_alias
    return HostKeyCheck(policy, alias or settings.host, settings.port, aliased=bool(alias))


def _connect_kwargs(
    dest: Destination,
    settings: asyncssh.SSHClientConnectionOptions,
    options: SSHOptions,
    check: HostKeyCheck | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "options": settings,
        "compression_algs": _NO_COMPRESSION,
        "encryption_algs": _CIPHERS,
        "connect_timeout": options.connect_timeout,
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
    extra = [str(key) for key in (dest.identity, options.identity) if key is not None]
    if extra:
        # -i (and an inventory's key) add keys; the agent and ssh config IdentityFile keys still apply.
        kwargs["client_keys"] = [*extra, *(settings.client_keys or [])]
    return kwargs
