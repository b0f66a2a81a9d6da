"""Where each SSH connection of a node really goes, resolved the way OpenSSH resolves it.

Where the ``ssh`` client is installed, OpenSSH itself answers: ``ssh -G [-F FILE] [-p PORT]
[-l USER] [-i KEY] [-J JUMPS] -- HOST`` prints every setting of one hop after its config files
(``-F FILE`` alone, else ``~/.ssh/config`` and ``/etc/ssh/ssh_config``), ``Match`` blocks
(``exec``, ``final``, ``canonical``), first-value-wins and host-name lowercasing have been
applied. A ``ProxyJump`` is followed as ssh follows it: ssh connects to the *last* jump host
through the others (``ssh -J REST -W host:port LAST``), so that hop is resolved with ``-J REST``
and the first jump host with its own settings, its own ``ProxyJump`` included.

Without an ``ssh`` client, asyncssh's config reader stands in (:attr:`Route.resolver` says so,
and ``nodeload nodes`` shows it): it reads ``$HOME/.ssh/config``, and knows neither ``Match
exec`` nor ``Match final``.

Host names and users are checked (:mod:`nodeload.addresses`) before ssh sees them and always
follow ``--``: data never becomes an option.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import hashlib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeload.addresses import refused, ssh_name_problem
from nodeload.errors import UsageError

SSH_CLIENT = "ssh"
USER_CONFIG = Path("~/.ssh/config")
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
MAX_JUMPS = 8
# ssh -G runs Match exec commands: one that hangs must not hang the run.
_RESOLVE_SECONDS = 30.0
# What OpenSSH tries when no IdentityFile is configured (ssh -G prints the same list).
_DEFAULT_IDENTITIES = (
    "id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa",
)  # fmt: skip
_DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_STRICT = {
    "true": "yes", "yes": "yes", "false": "no", "no": "no", "off": "no", "ask": "ask",
    "accept-new": "accept-new",
}  # fmt: skip


@dataclass(frozen=True)
class Destination:
    """Where one SSH hop goes, before the ssh config fills in the rest.

    Attributes:
        host: The host as given: an address or an ssh config alias.
        user: The login (``-l``), if the node source names one.
        port: The port (``-p``), if the node source names one.
        identity: A key of this node's own (an inventory's), added as ``-i`` would be.
        label: How errors name the hop (the node's name, or "jump host X").
        jump: The jump hosts of this node's own (an inventory's ProxyJump), as ``-J``.
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    label: str = ""
    jump: str | None = None


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route, every setting as the connection uses it.

    Attributes:
        name: The host as given (an alias, or the address itself).
        hostname: Where TCP goes (HostName, lowercased as ssh does).
        port: The port.
        user: The login.
        identity_files: Keys, in the order ssh tries them (expanded; missing ones included).
        identities_only: IdentitiesOnly: of the agent's keys, only those of these files.
        identity_agent: IdentityAgent: the agent's socket; None: ``$SSH_AUTH_SOCK``; "none": no agent.
        proxy_command: ProxyCommand, expanded as ssh expands it (run with ``$SHELL -c exec ...``).
        proxy_jump: The ProxyJump this hop is reached through, as resolved (for display).
        user_known_hosts: UserKnownHostsFile (``none`` kept: checking still happens).
        global_known_hosts: GlobalKnownHostsFile.
        strict_host_key_checking: ``yes``, ``ask``, ``accept-new`` or ``no``.
        host_key_alias: HostKeyAlias: the name known_hosts lists the key under.
        connect_timeout: ConnectTimeout in seconds, if set.
        address_family: ``any``, ``inet`` or ``inet6``.
        label: How errors name the hop.
    """

    name: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    identity_agent: str | None = None
    proxy_command: str | None = None
    proxy_jump: str | None = None
    user_known_hosts: tuple[str, ...] = _DEFAULT_USER_KNOWN_HOSTS
    global_known_hosts: tuple[str, ...] = _DEFAULT_GLOBAL_KNOWN_HOSTS
    strict_host_key_checking: str = "ask"
    host_key_alias: str | None = None
    connect_timeout: float | None = None
    address_family: str = "any"
    label: str = ""

    @property
    def key_files(self) -> list[str]:
        """The identity files that exist: ssh skips the others."""
        return [f for f in self.identity_files if os.path.isfile(f)]

    def to_json(self) -> dict[str, Any]:
        """The hop as ``nodeload nodes --json`` shows it."""
        return {
            "host": self.name,
            "hostname": self.hostname,
            "port": self.port,
            "user": self.user,
            "identity_files": list(self.identity_files),
            "identity_files_found": self.key_files,
            "identities_only": self.identities_only,
            "identity_agent": self.identity_agent,
            "proxy_command": self.proxy_command,
            "user_known_hosts": list(self.user_known_hosts),
            "global_known_hosts": list(self.global_known_hosts),
            "strict_host_key_checking": self.strict_host_key_checking,
            "host_key_alias": self.host_key_alias,
        }


@dataclass(frozen=True)
class Route:
    """The connections to a node: jump hosts first, the node last.

    Attributes:
        hops: The hops, in the order they are connected.
        resolver: ``openssh`` (``ssh -G``) or ``asyncssh`` (no ``ssh`` client here).
        notes: What the reader should know about how this was resolved.
    """

    hops: tuple[Hop, ...]
    resolver: str = "openssh"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def node(self) -> Hop:
        """The node's own hop."""
        return self.hops[-1]

    @property
    def jumps(self) -> tuple[Hop, ...]:
        """The jump hosts, first connected first."""
        return self.hops[:-1]


@dataclass(frozen=True)
class ResolveSettings:
    """What of the run's SSH options resolution needs (``SSHOptions`` holds more)."""

    ssh_config: Path | None = None
    identity: Path | None = None
    jump: str | None = None  # -J: overrides the node's and the config's ProxyJump
    ssh_client: str | None = None  # None: found on $PATH; "": pretend there is none


def resolve_route(dest: Destination, settings: ResolveSettings) -> Route:
    """Every hop to ``dest``: its jump hosts (followed as ssh follows them), then ``dest``.

    Raises:
        UsageError: the ssh config cannot be read for these hosts, a name could be taken for
            an option, or the jump hosts loop.
    """
    client = _ssh_client(settings)
    jump = settings.jump or dest.jump
    if client is not None:
        hops = _chain(dest, jump, lambda d, j: _openssh_hop(client, d, j, settings))
        return Route(tuple(hops), "openssh")
    hops = _chain(dest, jump, lambda d, j: _asyncssh_hop(d, j, settings))
    note = (
        "no ssh client here: the ssh config was read by asyncssh, which reads $HOME/.ssh/config and "
        "knows neither Match exec nor Match final (install openssh-client for OpenSSH's own answer)"
    )
    return Route(tuple(hops), "asyncssh", (note,))


def parse_destination(text: str, label: str) -> Destination:
    """``[USER@]HOST[:PORT]`` (or ``ssh://`` form) of a jump host.

    Raises:
        UsageError: when it is not of that form.
    """
    from nodeload.nodes.listed import parse_node  # nodes/ imports transports/: import late

    spec = parse_node(text.removeprefix("ssh://"))
    assert spec.address is not None
    return Destination(spec.address, spec.user, spec.port, label=label)


def check_names(dest: Destination) -> None:
    """Refuse names ssh could take for options or a ProxyCommand could run: every node source
    checks its own, this is the last line for all of them.

    Raises:
        UsageError: naming the hop and the field.
    """
    for what, value in (("host", dest.host), ("user", dest.user)):
        why = None if value is None else ssh_name_problem(value)
        if value is not None and why:
            raise UsageError(f"{dest.label or dest.host}: {refused(what, value, why)}")


def _ssh_client(settings: ResolveSettings) -> str | None:
    if settings.ssh_client is not None:
        return settings.ssh_client or None
    return shutil.which(SSH_CLIENT)


HopResolver = Callable[[Destination, "str | None"], Hop]


def _chain(dest: Destination, jump: str | None, resolve: HopResolver, depth: int = 0) -> list[Hop]:
    """``dest``'s hop after the hops it is reached through, as ssh builds a ProxyJump chain."""
    check_names(dest)
    hop = resolve(dest, jump)
    if hop.proxy_jump is None:
        return [hop]
    if depth >= MAX_JUMPS:
        raise UsageError(f"{dest.label or dest.host}: more than {MAX_JUMPS} jump hosts (do they loop?)")
    *outer, last = [part.strip() for part in hop.proxy_jump.split(",")]
    through = parse_destination(last, f"jump host {last}")
    return [*_chain(through, ",".join(outer) or None, resolve, depth + 1), hop]


# -- OpenSSH ---------------------------------------------------------------------------------


def _openssh_hop(client: str, dest: Destination, jump: str | None, settings: ResolveSettings) -> Hop:
    """One hop as ``ssh -G`` prints it."""
    argv = [client, "-G"]
    if settings.ssh_config is not None:
        argv += ["-F", str(settings.ssh_config)]
    if dest.port:
        argv += ["-p", str(dest.port)]
    if dest.user:
        argv += ["-l", dest.user]
    for key in (settings.identity, dest.identity):
        if key is not None:
            argv += ["-i", str(key)]
    if jump:
        argv += ["-J", jump]
    printed = _run_ssh_g([*argv, "--", dest.host], settings)
    return _hop_from_openssh(printed, dest)


def _run_ssh_g(argv: list[str], settings: ResolveSettings) -> dict[str, list[str]]:
    source = f"-F {settings.ssh_config}" if settings.ssh_config else "the ssh config"
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_RESOLVE_SECONDS
        )
    except subprocess.TimeoutExpired as err:
        raise UsageError(f"{source}: ssh -G took more than {_RESOLVE_SECONDS:g} s (a Match exec?)") from err
    except OSError as err:
        raise UsageError(f"cannot run {argv[0]} -G: {err.strerror or err}") from err
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip() and "Pseudo-terminal" not in line]
        raise UsageError(f"{source}: {'; '.join(said) or f'ssh -G failed (exit {done.returncode})'}")
    printed: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        printed.setdefault(key.lower(), []).append(value)
    return printed


def _hop_from_openssh(printed: Mapping[str, list[str]], dest: Destination) -> Hop:
    def one(key: str, default: str = "") -> str:
        values = printed.get(key)
        return values[0] if values else default

    hostname, user, port = one("hostname", dest.host), one("user"), int(one("port", "22"))
    alias = one("hostkeyalias") or None
    jump = one("proxyjump") or None
    tokens = _Tokens(dest.host, hostname, port, user, alias, _jump_host(jump))
    command = one("proxycommand")
    return Hop(
        name=dest.host,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(
            path for path in (_expand_path(f, tokens) for f in printed.get("identityfile", ())) if path
        ),
        identities_only=one("identitiesonly") == "yes",
        identity_agent=_agent(one("identityagent")),
        proxy_command=tokens.proxy_command(command) if command and command != "none" else None,
        proxy_jump=jump if jump and jump != "none" else None,
        user_known_hosts=tuple(one("userknownhostsfile").split()) or _DEFAULT_USER_KNOWN_HOSTS,
        global_known_hosts=tuple(one("globalknownhostsfile").split()) or _DEFAULT_GLOBAL_KNOWN_HOSTS,
        strict_host_key_checking=_STRICT.get(one("stricthostkeychecking", "ask"), "yes"),
        host_key_alias=alias,
        connect_timeout=_seconds(one("connecttimeout")),
        address_family=one("addressfamily", "any"),
        label=dest.label or dest.host,
    )


def _jump_host(jump: str | None) -> str:
    """``%j``: the host of the last jump (the one ssh connects onwards from)."""
    if not jump or jump == "none":
        return ""
    last = jump.split(",")[-1].strip().removeprefix("ssh://")
    host = last.rpartition("@")[2]
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _agent(value: str) -> str | None:
    if not value or value == "SSH_AUTH_SOCK":
        return None
    if value.startswith("$"):
        return os.environ.get(value.strip("${}"), "none")
    return value


def _seconds(value: str) -> float | None:
    try:
        return float(value) if value and value != "none" else None
    except ValueError:
        return None


# -- token expansion -------------------------------------------------------------------------

_TOKEN = re.compile(r"%(.)")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _passwd() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(os.getuid())
    except KeyError:
        return None


def local_user() -> str:
    """The local login name, as ssh takes it (the password database, else the environment)."""
    entry = _passwd()
    if entry is not None:
        return entry.pw_name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def home() -> str:
    """The home directory as OpenSSH takes it: the password database's, not ``$HOME``."""
    entry = _passwd()
    return entry.pw_dir if entry is not None else os.path.expanduser("~")


@dataclass(frozen=True)
class _Tokens:
    """What OpenSSH's ``%`` tokens stand for on one hop."""

    original: str
    hostname: str
    port: int
    user: str
    alias: str | None
    jump: str

    def common(self) -> dict[str, str]:
        this = socket.gethostname()
        keys = {
            "%": "%",
            "d": home(),
            "u": local_user(),
            "i": str(os.getuid()),
            "l": this,
            "L": this.split(".")[0],
            "h": self.hostname,
            "n": self.original,
            "p": str(self.port),
            "r": self.user,
            "k": self.alias or self.original,
            "j": self.jump,
        }
        text = keys["l"] + keys["h"] + keys["p"] + keys["r"] + keys["j"]
        keys["C"] = hashlib.sha1(text.encode()).hexdigest()
        return keys

    def proxy_command(self, command: str) -> str:
        """``command`` with ``%h %k %n %p %r %%`` expanded, as ssh runs a ProxyCommand."""
        keys = {"%": "%", "h": self.hostname, "k": self.alias or self.original, "n": self.original}
        return _percent(command, {**keys, "p": str(self.port), "r": self.user}, "ProxyCommand")


def _percent(text: str, keys: Mapping[str, str], what: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in keys:
            raise UsageError(f"{what} {text!r}: unknown token %{match.group(1)} (as ssh: percent_expand)")
        return keys[match.group(1)]

    return _TOKEN.sub(one, text)


def _expand_path(text: str, tokens: _Tokens) -> str | None:
    """An IdentityFile as ssh opens it: ``~`` (the password database's home), ``${VAR}``, ``%``
    tokens; None (the file is skipped, as ssh skips it) when it names an undefined variable."""
    if text.startswith("~/") or text == "~":
        text = home() + text[1:]
    elif text.startswith("~"):
        name, _, rest = text[1:].partition("/")
        with contextlib.suppress(KeyError):
            text = os.path.join(pwd.getpwnam(name).pw_dir, rest)
    if any(name not in os.environ for name in _ENV.findall(text)):
        return None
    text = _ENV.sub(lambda m: os.environ[m.group(1)], text)
    return _percent(text, tokens.common(), "IdentityFile")


# -- asyncssh (no ssh client) ------------------------------------------------------------------


def config_files(settings: ResolveSettings) -> list[str]:
    """The ssh config files asyncssh reads: ``-F FILE`` alone, else ``~/.ssh/config`` and the
    system's, those that exist."""
    if settings.ssh_config is not None:
        return [str(settings.ssh_config)]
    return [str(f) for f in (USER_CONFIG.expanduser(), SYSTEM_CONFIG) if os.access(f, os.R_OK)]


def _asyncssh_hop(dest: Destination, jump: str | None, settings: ResolveSettings) -> Hop:
    import asyncssh

    from nodeload.transports import ssh_hostkeys  # teaches asyncssh StrictHostKeyChecking

    assert ssh_hostkeys
    # No keys loaded here (client_keys=None): a missing IdentityFile is skipped at connect time.
    kwargs: dict[str, Any] = {"config": config_files(settings), "client_keys": None}
    if dest.port:
        kwargs["port"] = dest.port
    if dest.user:
        kwargs["username"] = dest.user
    try:
        options = asyncssh.SSHClientConnectionOptions(host=dest.host, **kwargs)
    except (OSError, ValueError, asyncssh.Error) as err:
        source = f"-F {settings.ssh_config}" if settings.ssh_config else "the ssh config"
        hint = " (asyncssh reads it, as no ssh client is installed: install openssh-client)"
        raise UsageError(f"{source}: {err}{hint}") from err
    config: dict[str, Any] = options.config.get_options(False)
    hostname = str(options.host or dest.host)
    explicit = jump is not None  # as ssh -J: the config's ProxyCommand no longer applies
    if jump is None:
        configured = config.get("ProxyJump")
        jump = None if not configured or str(configured).lower() == "none" else str(configured)
    elif jump.lower() == "none":
        jump = None
    command = options.proxy_command if jump is None and not explicit else None
    keys = [str(k) for k in (settings.identity, dest.identity) if k is not None]
    configured_keys = [str(Path(k).expanduser()) for k in config.get("IdentityFile", ())]
    defaults = [str(Path("~/.ssh", name).expanduser()) for name in _DEFAULT_IDENTITIES]
    user_files = _configured(config, "UserKnownHostsFile", _DEFAULT_USER_KNOWN_HOSTS)
    global_files = _configured(config, "GlobalKnownHostsFile", _DEFAULT_GLOBAL_KNOWN_HOSTS)
    return Hop(
        name=dest.host,
        hostname=hostname,
        port=int(options.port or 22),
        user=str(options.username),
        identity_files=tuple(keys + (configured_keys or defaults)),
        identities_only=bool(config.get("IdentitiesOnly")),
        identity_agent=_agent(str(config.get("IdentityAgent") or "")),
        proxy_command=shlex.join(command) if command else None,
        proxy_jump=jump,
        user_known_hosts=tuple(_home_expanded(f) for f in user_files),
        global_known_hosts=tuple(_home_expanded(f) for f in global_files),
        strict_host_key_checking=_STRICT.get(str(config.get("StrictHostKeyChecking", "ask")).lower(), "yes"),
        host_key_alias=options.host_key_alias,
        connect_timeout=_seconds(str(config.get("ConnectTimeout") or "")),
        label=dest.label or dest.host,
    )


def _configured(config: Mapping[str, Any], option: str, default: Sequence[str]) -> list[str]:
    """The option's files; ``none`` (which asyncssh reads as an empty list) kept as ``none``."""
    if option not in config:
        return list(default)
    return [str(f) for f in config[option]] or ["none"]


def _home_expanded(name: str) -> str:
    text = name.replace("%%", "\0").replace("%d", os.path.expanduser("~")).replace("%u", local_user())
    return os.path.expanduser(text.replace("\0", "%"))


def describe(route: Route) -> Iterator[str]:
    """The route in words, one line per hop (jump hosts first)."""
    for hop in route.hops:
        via = f" via ProxyCommand {hop.proxy_command!r}" if hop.proxy_command else ""
        yield f"{hop.user}@{hop.hostname}:{hop.port}{via}"


# -- host names, for a shell completion --------------------------------------------------------


def config_hosts(settings: ResolveSettings) -> list[str]:
    """The host aliases the ssh config files name (``Host`` patterns without wildcards or
    negation), following ``Include`` as ssh does: what a completion of ``--node`` offers."""
    found: dict[str, None] = {}
    user_dir = Path(home()) / ".ssh"
    for path in config_files(settings):
        base = user_dir if settings.ssh_config is not None or path != str(SYSTEM_CONFIG) else Path("/etc/ssh")
        _hosts_of(Path(path), base, found, depth=0)
    return list(found)


def _hosts_of(path: Path, base: Path, found: dict[str, None], depth: int) -> None:
    if depth > 16:  # ssh's own limit on nested Includes
        return
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote: ssh would refuse the line too
            continue
        if not words:
            continue
        keyword, *values = words
        keyword = keyword.split("=", 1)[0].lower()
        if keyword == "host":
            found.update((v, None) for v in values if not any(c in v for c in "*?!"))
        elif keyword == "include":
            for pattern in values:
                expanded = os.path.expanduser(pattern)
                full = expanded if os.path.isabs(expanded) else str(base / expanded)
                for each in sorted(glob.glob(full)):
                    _hosts_of(Path(each), base, found, depth + 1)
