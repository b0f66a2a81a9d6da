"""Host-key checking for SSH nodes, decided by nodeload rather than left to the ssh config.

asyncssh turns checking off when the config says ``UserKnownHostsFile none``, and
trusts a lone ``GlobalKnownHostsFile`` when the user file is missing. OpenSSH
would still check in both cases, and so does nodeload: it reads the known_hosts
files the hop's resolution names (``UserKnownHostsFile``, ``GlobalKnownHostsFile`` as
``ssh -G`` prints them, or ``--known-hosts``), matches the node's key itself, and only
``--insecure-skip-host-key-check`` turns checking off. ``StrictHostKeyChecking
accept-new`` is honored as OpenSSH does (an unknown host's key is recorded, a
changed one refused); ``no``/``off`` are not (a key nobody checked would be trusted).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.config import SSHClientConfig, SSHConfig

from nodeload.errors import HostKeyRejected
from nodeload.transports.ssh_resolve import Hop, home
from nodeload.wording import setting

# asyncssh's config reader (used where no ssh client is installed) ignores StrictHostKeyChecking (it
# never prompts); teach it the option so that "accept-new" can be honored. If asyncssh's internals
# change, the option reads as unset: strict.
with contextlib.suppress(AttributeError, TypeError):
    SSHClientConfig._handlers.setdefault(
        "stricthostkeychecking", ("StrictHostKeyChecking", SSHConfig._set_string)
    )


@dataclass(frozen=True)
class TrustPolicy:
    """Which known_hosts files vouch for host keys, and whether unknown hosts may be added."""

    files: tuple[Path, ...]  # consulted in order; missing ones are simply empty
    add_unknown_to: Path | None = None  # StrictHostKeyChecking accept-new: where new keys go
    ignored_setting: str | None = None  # a config setting that tried to weaken checking

    @property
    def existing(self) -> list[Path]:
        """The files that exist."""
        return [f for f in self.files if f.is_file()]


def trust_policy(explicit: Path | None, hop: Hop) -> TrustPolicy:
    """The trust policy for one hop, from ``--known-hosts`` or the hop's resolved settings.

    Args:
        explicit: ``--known-hosts FILE``: the only file consulted when given.
        hop: the hop as resolved (``ssh -G``'s UserKnownHostsFile, GlobalKnownHostsFile and
            StrictHostKeyChecking, already expanded).
    """
    strict = hop.strict_host_key_checking
    ignored = f"StrictHostKeyChecking {strict}" if strict == "no" else None
    if explicit is not None:
        files: tuple[Path, ...] = (explicit,)
    else:
        user_files = [f for f in hop.user_known_hosts if f.lower() != "none"]
        if not user_files:
            ignored = ignored or "UserKnownHostsFile none"
        global_files = [f for f in hop.global_known_hosts if f.lower() != "none"]
        files = tuple(Path(f) for f in (*user_files, *global_files))
    add_to = None
    if strict == "accept-new":
        writable = [f for f in files if not str(f).startswith("/etc/")]
        add_to = writable[0] if writable else Path(home(), ".ssh", "known_hosts")
    return TrustPolicy(files, add_to, ignored)


def known_hosts_name(host: str, port: int, *, aliased: bool = False) -> str:
    """How known_hosts names ``host`` reached on ``port``, as OpenSSH writes it: ``[host]:port``
    off port 22, and a HostKeyAlias as it is, whatever the port."""
    return host if aliased or port == 22 else f"[{host}]:{port}"


def known_hosts_entry(name: str, key: asyncssh.SSHKey) -> str:
    """The ``known_hosts`` line for ``key`` under ``name`` (see :func:`known_hosts_name`)."""
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{name} {algorithm} {blob}"


class HostKeyCheck:
    """One connection's host-key check: the matcher asyncssh calls, and what the server offered.

    ``host`` and ``port`` are what the connection really uses (HostKeyAlias or HostName,
    and the resolved port): the names known_hosts entries are looked up and written under.
    """

    def __init__(self, policy: TrustPolicy, host: str, port: int, *, aliased: bool = False) -> None:
        """Check keys for ``host``:``port`` under ``policy`` (``aliased``: ``host`` is a HostKeyAlias).

        Raises:
            HostKeyRejected: when a known_hosts file exists but cannot be read or parsed.
        """
        self.policy, self.host, self.port = policy, host, port
        self.name = known_hosts_name(host, port, aliased=aliased)
        self.offered: asyncssh.SSHKey | None = None  # the key of the handshake that failed
        self.listed = False  # known_hosts holds keys for this host (so a new one is a CHANGE)
        self.added = False  # accept-new recorded the key
        existing = policy.existing
        try:
            self._known = asyncssh.read_known_hosts([str(f) for f in existing]) if existing else None
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            files = ", ".join(map(str, existing))
            raise HostKeyRejected(f"cannot read known_hosts ({files}): {exc}. Nothing was sent.") from exc

    def match(self, host: str, addr: str, port: int | None) -> Any:
        """asyncssh's ``known_hosts`` callable: the trusted, CA and revoked keys for the host."""
        if self._known is None:
            return [], [], []
        found = self._known.match(host, addr, port)
        self.listed = bool(found[0] or found[1])
        return found

    def validate(self, key: asyncssh.SSHKey) -> bool:
        """Called for a key no known_hosts entry vouches for: record it; trust it only under accept-new."""
        self.offered = key
        if self.policy.add_unknown_to is None or self.listed:
            return False
        _append_entry(self.policy.add_unknown_to, known_hosts_entry(self.name, key))
        self.added = True
        return True

    def rejection(self, node: str) -> str:
        """Why the node was refused, with the key of this very handshake and what to do."""
        searched = ", ".join(map(str, self.policy.files)) or "none"
        note = (
            f" (your ssh config sets {self.policy.ignored_setting}; nodeload checks host keys regardless)"
            if self.policy.ignored_setting
            else ""
        )
        if self.offered is None:
            return f"the host key of {node} could not be verified. Nothing was sent.{note}"
        fingerprint = f"{self.offered.get_algorithm()} {self.offered.get_fingerprint('sha256')}"
        entry = known_hosts_entry(self.name, self.offered)
        shown = self.name
        if self.listed:
            # A key that differs from the one on record may be an impostor's: never suggest adding it.
            return (
                f"HOST KEY CHANGED for {shown}: known_hosts lists a different key, and the node now offers "
                f"{fingerprint}. Nothing was sent. Someone may be impersonating the node, or it was "
                "reinstalled: check the fingerprint on the node (ssh-keygen -lf /etc/ssh/ssh_host_*.pub), "
                f"then replace the old entry (ssh-keygen -R '{shown}').{note}"
            )
        return (
            f"host key of {shown} is not in known_hosts (searched: {searched}); it offered {fingerprint}. "
            "Nothing was sent. Check that fingerprint on the node (ssh-keygen -lf "
            "/etc/ssh/ssh_host_*.pub); if it matches, add this line to ~/.ssh/known_hosts (or a file "
            f"given with {setting('known_hosts')}):\n  {entry}{note}"
        )


def _append_entry(path: Path, line: str) -> None:
    """Append a known_hosts line (creating the file 0600 in a 0700 directory), under a lock."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(line + "\n")


class CheckingClient(asyncssh.SSHClient):
    """asyncssh client callbacks that defer host-key decisions to a :class:`HostKeyCheck`."""

    def __init__(self, check: HostKeyCheck) -> None:
        """Use ``check`` for keys no known_hosts entry vouches for."""
        self._check = check

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Accept only under accept-new, for a host known_hosts does not list yet."""
        return self._check.validate(key)
