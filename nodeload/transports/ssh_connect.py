"""Opening an SSH connection to a node the way OpenSSH would, with nodeload's own safety rules.

Every hop is resolved first (:mod:`.ssh_resolve`: ``ssh -G``, else asyncssh's config reader) and
asyncssh is handed the result as explicit settings, with no config file of its own: host, port,
user, the identity files that exist, the agent, ProxyCommand. The host key is checked by nodeload
(``ssh_hostkeys``) against the known_hosts files of the same resolution, and nothing of the
user's is forwarded. Jump hosts are connected to first, each with its own host key checked, and
the node is reached through them.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from nodeload.errors import AuthenticationFailed, HostKeyRejected, NodeUnreachable
from nodeload.transports.ssh_hostkeys import CheckingClient, HostKeyCheck, trust_policy
from nodeload.transports.ssh_resolve import (
    Destination,
    Hop,
    ResolveSettings,
    Route,
    local_user,
    parse_destination,
    resolve_route,
)

__all__ = ["Connection", "Destination", "SSHOptions", "connect", "local_user", "parse_destination", "resolve"]

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
class SSHOptions:
    """How to reach nodes over SSH; defaults follow OpenSSH's."""

    identity: Path | None = None
    ssh_config: Path | None = None
    known_hosts: Path | None = None
    verify_host_keys: bool = True
    connect_timeout: float = 15.0
    jump: str | None = None  # -J [USER@]HOST[:PORT][,...]: overrides the config's ProxyJump
    ssh_client: str | None = None  # the ssh client that resolves hops; None: ssh on $PATH, "": none

    @property
    def resolving(self) -> ResolveSettings:
        """What resolving a hop takes of these options."""
        return ResolveSettings(self.ssh_config, self.identity, self.jump, self.ssh_client)


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


def resolve(dest: Destination, options: SSHOptions) -> Route:
    """Every hop to ``dest`` as the connection will use it (see :mod:`.ssh_resolve`).

    Raises:
        UsageError: the ssh config cannot be read for it, or a name is refused.
    """
    return resolve_route(dest, options.resolving)


async def connect(dest: Destination, options: SSHOptions, route: Route | None = None) -> Connection:
    """Connect to ``dest`` (through its jump hosts, if any), checking every host key.

    ``route`` is ``dest`` resolved already (:func:`resolve`); resolved here when not given.

    Raises:
        NodeError: HostKeyRejected, AuthenticationFailed or NodeUnreachable, naming the hop.
        UsageError: the ssh config cannot be read, or a host or user name could be read as an
            option or a shell word.
    """
    route = route or resolve(dest, options)
    jumps: list[asyncssh.SSHClientConnection] = []
    try:
        tunnel = None
        for hop in route.jumps:
            jumps.append(await _open(hop, options, tunnel))
            tunnel = jumps[-1]
        return Connection(await _open(route.node, options, tunnel, node=True), jumps)
    except BaseException:
        await Connection(jumps[-1], jumps[:-1]).close() if jumps else None
        raise


async def _open(
    hop: Hop,
    options: SSHOptions,
    tunnel: asyncssh.SSHClientConnection | None,
    *,
    node: bool = False,
) -> asyncssh.SSHClientConnection:
    check = _host_key_check(hop, options)
    kwargs = _connect_kwargs(hop, options, check)
    # Ours, never asyncssh's own reading of ProxyJump: that hop's host key is checked above.
    kwargs["tunnel"] = tunnel
    where = "" if node else f"{hop.label}: "
    try:
        return await asyncssh.connect(hop.hostname, **kwargs)
    except asyncssh.HostKeyNotVerifiable as err:
        raise HostKeyRejected(where + (check.rejection(hop.label) if check else str(err))) from err
    except asyncssh.PermissionDenied as err:
        raise AuthenticationFailed(
            f"{where}SSH authentication failed ({err.reason}) as {hop.user!r}. Load the key into "
            "ssh-agent, name it with -i FILE or IdentityFile in ~/.ssh/config, and check the user name."
        ) from err
    except asyncssh.KeyImportError as err:
        raise AuthenticationFailed(f"{where}cannot load the SSH key: {err}") from err
    except asyncssh.ChannelOpenError as err:  # the jump host would not connect onwards
        raise NodeUnreachable(f"the jump host could not reach {hop.hostname}: {err.reason}") from err
    except asyncssh.DisconnectError as err:
        raise NodeUnreachable(f"{where}SSH connection refused: {err.reason}") from err
    except TimeoutError as err:  # asyncssh's connect_timeout: TCP, banner, key exchange and login
        seconds = kwargs["connect_timeout"]
        raise NodeUnreachable(
            f"{where}cannot connect over SSH: {_address(hop)} did not answer within {seconds:g} s "
            "(ConnectTimeout in the ssh config sets how long to wait)"
        ) from err
    except OSError as err:
        reason = str(err) or type(err).__name__
        raise NodeUnreachable(f"{where}cannot connect over SSH: {reason}") from err


def _address(hop: Hop) -> str:
    return f"[{hop.hostname}]:{hop.port}" if ":" in hop.hostname else f"{hop.hostname}:{hop.port}"


def _host_key_check(hop: Hop, options: SSHOptions) -> HostKeyCheck | None:
    """The check of this hop's host key (None with --insecure-skip-host-key-check)."""
    if not options.verify_host_keys:
        return None
    policy = trust_policy(options.known_hosts, hop)
    alias = hop.host_key_alias
    return HostKeyCheck(policy, alias or hop.hostname, hop.port, aliased=bool(alias))


def _connect_kwargs(hop: Hop, options: SSHOptions, check: HostKeyCheck | None) -> dict[str, Any]:
    """asyncssh's settings for ``hop``, every one explicit: asyncssh reads no config file."""
    kwargs: dict[str, Any] = {
        "config": None,
        "port": hop.port,
        "username": hop.user,
        "compression_algs": _NO_COMPRESSION,
        "encryption_algs": _CIPHERS,
        "connect_timeout": hop.connect_timeout or options.connect_timeout,
        "window": 8 * 1024 * 1024,
        # A node that vanishes must fail its push, not hang every other node's report.
        "keepalive_interval": 15,
        "keepalive_count_max": 3,
        # Whatever the ssh config says: a node (or an impostor) never gets the user's agent
        # or X display through the channels nodeload opens.
        "agent_forwarding": False,
        "x11_forwarding": False,
        "known_hosts": check.match if check else None,
        "host_key_alias": hop.host_key_alias,
        **_keys(hop),
    }
    if hop.address_family in ("inet", "inet6"):
        kwargs["family"] = socket.AF_INET if hop.address_family == "inet" else socket.AF_INET6
    if hop.proxy_command:
        # As ssh runs it: the user's shell, exec'ing the expanded command.
        kwargs["proxy_command"] = [os.environ.get("SHELL") or "/bin/sh", "-c", f"exec {hop.proxy_command}"]
    if check is not None:
        kwargs["client_factory"] = lambda: CheckingClient(check)
    return kwargs


def _keys(hop: Hop) -> dict[str, Any]:
    """The keys ssh would offer: the identity files that exist (a missing one is skipped, as ssh
    skips it; ``-i`` and an inventory's key are among them), and the agent's (only those of these
    files under IdentitiesOnly)."""
    files = list(dict.fromkeys(hop.key_files))
    # Encrypted files are skipped, not asked about: their key may well be in the agent.
    keys: dict[str, Any] = {"client_keys": files, "ignore_encrypted": True}
    agent = hop.identity_agent
    if agent == "none":
        keys["agent_path"] = ""
    elif agent is not None:
        keys["agent_path"] = agent
    if hop.identities_only:
        identities = [key for key in (_public_key(f) for f in files) if key is not None]
        keys["agent_identities"] = identities
        if not identities:
            keys["agent_path"] = ""  # no file, so none of the agent's keys either
    return keys


def _public_key(path: str) -> asyncssh.SSHKey | None:
    """The public half of an identity file (its .pub, else the unencrypted private key), if any."""
    with contextlib.suppress(OSError, ValueError, asyncssh.KeyImportError):
        return asyncssh.read_public_key(path + ".pub")
    with contextlib.suppress(OSError, ValueError, asyncssh.KeyImportError):
        return asyncssh.read_private_key(path).convert_to_public()
    return None
