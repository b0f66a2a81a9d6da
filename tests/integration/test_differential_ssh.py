"""How nodeload resolves SSH routes, against what OpenSSH's own client really does.

For each ssh config of the corpus, ``ssh -v`` is run for the destination (with ``BatchMode``;
every address is on loopback, on a port nothing listens on, or a ProxyCommand that exits at
once), and its debug output says what each ssh process did: the ProxyCommand it ran (for a
ProxyJump, the nested ``ssh ... -W host:port JUMP`` with its ``-l``/``-p``/``-J``), the address
it connected to, the identity files it loaded. Each hop's settings are then OpenSSH's own answer
for *that* process: ``ssh -G`` with the very arguments it was started with. nodeload's route must
have the same hops, in the same order, each going to the same host and port as the same user,
with the same host-key settings, identity files and ProxyCommand.

The same corpus is resolved by the fallback nodeload uses where no ``ssh`` client is installed
(asyncssh's config reader); where it differs from OpenSSH, the case names why in
``FALLBACK_DIFFERS``.

Deliberate differences (``DELIBERATE``) are asserted as such.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeload.errors import UsageError
from nodeload.transports.ssh_resolve import Destination, Hop, ResolveSettings, resolve_route

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's client (openssh-client)"),
]

DELIBERATE = {
    "identity-on-every-hop": "nodeload's -i key is offered to the jump hosts too (ssh -i only to the "
    "destination): one key for a whole fleet behind a bastion is the common case",
}
# Where asyncssh's config reader (no ssh client installed) is known to read a config otherwise.
FALLBACK_DIFFERS = {
    "match-exec": "asyncssh does not run Match exec",
    "match-final": "asyncssh has no final pass",
    "host-comma": "asyncssh splits Host patterns at commas",
    "uppercase-host": "asyncssh matches Host patterns against the name as typed",
    "proxycommand-before-proxyjump": "asyncssh lets ProxyJump win over an earlier ProxyCommand",
    "percent-k": "asyncssh does not know the %k token",
    "identity-tokens": "asyncssh refuses an IdentityFile naming an undefined ${VAR} (ssh skips the file)",
}


@dataclass(frozen=True)
class SshCase:
    """An ssh config (``{dir}``: the case's directory, ``{key}``: an existing key file), the
    destination, and the options nodeload would add (inventory key, -J, -l, -p)."""

    name: str
    config: str
    host: str = "node"
    user: str | None = None
    port: int | None = None
    identity: str | None = None  # -i
    jump: str | None = None  # -J
    deliberate: str | None = None


BASTION = """\
Host bastion
  HostName 127.0.0.1
  Port 2201
  User jumper
"""

CORPUS = [
    SshCase("plain", "Host node\n  HostName 127.0.0.2\n  Port 2202\n  User alice\n"),
    SshCase("defaults", "Host other\n  User nobody\n", host="127.0.0.3"),
    SshCase(
        "first-value-wins",
        "Host node\n  User first\nHost *\n  User second\n  Port 2203\n  HostName 127.0.0.3\n",
    ),
    SshCase(
        "command-line-wins",
        "Host node\n  User config\n  Port 2204\n  HostName 127.0.0.4\n",
        user="cli",
        port=2304,
    ),
    SshCase("wildcards", "Host n*e !nope\n  HostName 127.0.0.5\n  Port 2205\nHost *\n  User star\n"),
    SshCase("negation", "Host * !node\n  User not-node\nHost *\n  HostName 127.0.0.6\n  Port 2206\n"),
    SshCase("host-comma", "Host node,other\n  User comma\nHost *\n  HostName 127.0.0.7\n  Port 2207\n"),
    SshCase("uppercase-host", "Host node\n  HostName 127.0.0.8\n  Port 2208\n  User lower\n", host="NODE"),
    SshCase("hostname-tokens", "Host 9\n  HostName 127.0.0.%h\n  Port 2209\n", host="9"),
    SshCase("proxyjump", BASTION + "Host node\n  HostName 127.0.0.10\n  Port 2210\n  ProxyJump bastion\n"),
    SshCase(
        "proxyjump-chain",
        BASTION + "Host inner\n  HostName 127.0.0.11\n  Port 2211\nHost node\n  HostName 127.0.0.12\n"
        "  ProxyJump bastion,deploy@inner:2299\n",
    ),
    SshCase(
        "jump-hosts-own-jump",
        BASTION + "Host gw\n  HostName 127.0.0.13\n  Port 2213\n  ProxyJump bastion\n"
        "Host node\n  HostName 127.0.0.14\n  ProxyJump gw\n",
    ),
    SshCase(
        "jump-in-the-middle-loses-its-own",
        BASTION + "Host a\n  HostName 127.0.0.15\n  ProxyJump bastion\nHost b\n  HostName 127.0.0.16\n"
        "  ProxyJump nowhere\nHost node\n  HostName 127.0.0.17\n  ProxyJump a,b\n",
    ),
    SshCase("inventory-jump", BASTION + "Host node\n  HostName 127.0.0.18\n", jump="bastion"),
    SshCase(
        "inventory-jump-beats-config",
        BASTION + "Host node\n  HostName 127.0.0.19\n  ProxyJump elsewhere\n",
        jump="jumper@127.0.0.20:2220",
    ),
    SshCase("jump-none", BASTION + "Host node\n  HostName 127.0.0.21\n  ProxyJump bastion\n", jump="none"),
    SshCase(
        "proxyjump-none-in-config",
        "Host node\n  ProxyJump none\n  HostName 127.0.0.22\nHost *\n  ProxyJump x\n",
    ),
    SshCase(
        "proxycommand",
        "Host node\n  HostName 127.0.0.23\n  Port 2223\n  User pc\n"
        "  ProxyCommand /bin/false %h %p %r %n %%\n",
    ),
    SshCase(
        "proxycommand-before-proxyjump",
        BASTION
        + "Host node\n  ProxyCommand /bin/false %h\n  HostName 127.0.0.24\nHost *\n  ProxyJump bastion\n",
    ),
    SshCase(
        "proxyjump-before-proxycommand",
        BASTION
        + "Host node\n  ProxyJump bastion\n  HostName 127.0.0.25\nHost *\n  ProxyCommand /bin/false\n",
    ),
    SshCase(
        "identity-files",
        "Host node\n  HostName 127.0.0.26\n  User idu\n  IdentityFile {key}\n"
        "  IdentityFile {dir}/missing_%h_%r\n"
        "  IdentityFile ~/.ssh/none_%u\n  ProxyCommand /bin/false\n",
    ),
    SshCase(
        "identity-tokens",
        "Host node\n  HostName 127.0.0.27\n  Port 2227\n  IdentityFile {dir}/k_%n_%p_%l_%L_%i_%d\n"
        "  IdentityFile {dir}/c_%C\n  IdentityFile {dir}/e_${{USER}}\n  ProxyCommand /bin/false\n",
    ),
    SshCase(
        "identities-only",
        "Host node\n  HostName 127.0.0.28\n  IdentitiesOnly yes\n  IdentityFile {key}\n  IdentityAgent none\n"
        "  ProxyCommand /bin/false\n",
    ),
    SshCase(
        "command-line-key-first",
        "Host node\n  HostName 127.0.0.29\n  IdentityFile {dir}/config_key\n  ProxyCommand /bin/false\n",
        identity="{key}",
    ),
    SshCase(
        "identity-on-every-hop",
        BASTION + "Host node\n  HostName 127.0.0.30\n  ProxyJump bastion\n",
        identity="{key}",
        deliberate="identity-on-every-hop",
    ),
    SshCase(
        "host-key-settings",
        "Host node\n  HostName 127.0.0.31\n  HostKeyAlias node-alias\n"
        "  UserKnownHostsFile {dir}/kh1 {dir}/kh2\n  GlobalKnownHostsFile {dir}/global\n"
        "  StrictHostKeyChecking accept-new\n",
    ),
    SshCase(
        "percent-k",
        "Host node\n  HostName 127.0.0.32\n  HostKeyAlias aliased\n  UserKnownHostsFile {dir}/known_%k\n",
    ),
    SshCase(
        "known-hosts-none",
        "Host node\n  HostName 127.0.0.33\n  UserKnownHostsFile none\n  StrictHostKeyChecking no\n",
    ),
    SshCase(
        "match-exec",
        'Match exec "test %h = 127.0.0.34"\n  User matched\nHost node\n  HostName 127.0.0.34\n'
        'Match exec "test %n = node"\n  Port 2234\n',
    ),
    SshCase(
        "match-final",
        "Host node\n  HostName 127.0.0.35\nMatch final host 127.0.0.35\n  User final\n  Port 2235\n",
    ),
    SshCase(
        "match-canonical",
        "Host node\n  HostName 127.0.0.36\nMatch canonical host 127.0.0.36\n  User canon\n",
    ),
    SshCase("match-user", "Match user cliuser\n  HostName 127.0.0.37\n  Port 2237\n", user="cliuser"),
    SshCase(
        "match-host-original", "Host node\n  HostName 127.0.0.38\nMatch originalhost node\n  Port 2238\n"
    ),
    SshCase("match-localuser", "Match localuser root\n  User was-root\nHost *\n  HostName 127.0.0.39\n"),
    SshCase("match-all", "Host node\n  HostName 127.0.0.40\nMatch all\n  Port 2240\n"),
    SshCase(
        "include",
        "Include {dir}/included.conf\nHost *\n  HostName 127.0.0.41\n",
    ),
    SshCase(
        "jump-user-and-port-from-spec",
        "Host node\n  HostName 127.0.0.42\n  ProxyJump someone@127.0.0.43:2243\n",
    ),
    SshCase("ipv6-destination", "Host ::1\n  Port 2244\n  User v6\n", host="::1"),
]


@pytest.fixture()
def case_dir(tmp_path: Path) -> Path:
    key = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "included.conf").write_text("Host node\n  User included\n  Port 2241\n")
    return tmp_path


def _config(case: SshCase, directory: Path) -> Path:
    path = directory / "ssh_config"
    path.write_text(case.config.format(dir=directory, key=directory / "id_test"))
    return path


def _identity(case: SshCase, directory: Path) -> str | None:
    return case.identity.format(key=directory / "id_test") if case.identity else None


@dataclass(frozen=True)
class Process:
    """One ssh process of OpenSSH's run: its arguments, and what it connected to."""

    args: list[str]  # the options before the host, as ssh got them
    host: str
    target: tuple[str, int] | None = None  # where -W forwarded (the next process's hop)
    identity_files: tuple[str, ...] | None = None


def _openssh_run(case: SshCase, directory: Path, config: Path) -> tuple[list[Process], list[str]]:
    """``ssh -v`` for the destination: its processes (outermost first) and its debug lines."""
    args = ["-F", str(config)]
    args += ["-l", case.user] if case.user else []
    args += ["-p", str(case.port)] if case.port else []
    identity = _identity(case, directory)
    args += ["-i", identity] if identity else []
    args += ["-J", case.jump] if case.jump else []
    argv = ["ssh", "-v", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", *args, "--", case.host, "true"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=directory
    )
    lines = done.stderr.splitlines()
    processes = [Process(args, case.host)]
    for line in lines:
        found = re.search(r"Executing proxy command: exec (.*)$", line)
        if found:
            words = shlex.split(found.group(1))
            if words[0] == "ssh" and "-W" in words:
                target = words[words.index("-W") + 1]
                host, _, port = target.rpartition(":")
                processes[-1] = Process(processes[-1].args, processes[-1].host, (host.strip("[]"), int(port)))
                nested = [w for w in words[1:-1] if w not in ("-v", "-W", target)]
                processes.append(Process(nested, words[-1]))
    return processes, lines


def _openssh_g(process: Process, directory: Path) -> dict[str, str]:
    done = subprocess.run(
        ["ssh", "-G", *process.args, "--", process.host],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=directory, check=True,
    )  # fmt: skip
    return {line.partition(" ")[0]: line.partition(" ")[2] for line in done.stdout.splitlines()}


def _loaded_identities(lines: list[str]) -> list[str]:
    """The identity files one ssh process loaded (each is followed by its -cert companion)."""
    files = [m.group(1) for line in lines if (m := re.search(r"identity file (.*) type -?\d+$", line))]
    return files[::2]


def _connected(lines: list[str]) -> tuple[str, int] | None:
    for line in lines:
        found = re.search(r"Connecting to (\S+) \[[^\]]*\] port (\d+)", line)
        if found:
            return found.group(1), int(found.group(2))
    return None


def _proxy_command(lines: list[str]) -> str | None:
    for line in lines:
        found = re.search(r"Executing proxy command: exec (.*)$", line)
        if found and not found.group(1).startswith("ssh "):
            return found.group(1)
    return None


def _nodeload(case: SshCase, directory: Path, config: Path, client: str | None = None) -> list[Hop]:
    dest = Destination(case.host, case.user, case.port, label=case.host, jump=case.jump)
    identity = _identity(case, directory)
    settings = ResolveSettings(
        ssh_config=config, identity=Path(identity) if identity else None, ssh_client=client
    )
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return list(resolve_route(dest, settings).hops)
    finally:
        os.chdir(cwd)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_route_matches_openssh(case: SshCase, case_dir: Path) -> None:
    config = _config(case, case_dir)
    processes, lines = _openssh_run(case, case_dir, config)
    hops = _nodeload(case, case_dir, config)
    # ssh's processes go from the destination inwards; nodeload's hops from the first jump outwards.
    assert len(hops) == len(processes), (
        f"nodeload: {[h.hostname for h in hops]}; OpenSSH's processes: {[p.host for p in processes]}"
    )
    for hop, process in zip(reversed(hops), processes, strict=True):
        printed = _openssh_g(process, case_dir)
        assert (hop.hostname, hop.port, hop.user) == (
            printed["hostname"],
            int(printed["port"]),
            printed["user"],
        )
        assert hop.host_key_alias == (printed.get("hostkeyalias") or None)
        assert " ".join(hop.user_known_hosts) == printed["userknownhostsfile"]
        assert " ".join(hop.global_known_hosts) == printed["globalknownhostsfile"]
        strict = {"true": "yes", "false": "no"}.get(
            printed["stricthostkeychecking"], printed["stricthostkeychecking"]
        )
        assert hop.strict_host_key_checking == strict
        assert hop.identities_only == (printed["identitiesonly"] == "yes")
        if process.target is not None:  # where its jump host forwarded it (ssh -W): its own hop
            assert process.target == (hop.hostname, hop.port)
    first = hops[0]
    direct = _connected(lines)
    if direct is not None:
        assert (first.hostname, first.port) == direct
    command = _proxy_command(lines)
    assert first.proxy_command == command
    if command is not None and len(hops) == 1:  # a single process: its identity lines are its own
        assert list(first.identity_files) == _loaded_identities(lines)


def test_identity_on_every_hop_is_deliberate(case_dir: Path) -> None:
    (case,) = [c for c in CORPUS if c.name == "identity-on-every-hop"]
    hops = _nodeload(case, case_dir, _config(case, case_dir))
    assert DELIBERATE["identity-on-every-hop"]
    assert all(str(case_dir / "id_test") in hop.identity_files for hop in hops)


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_fallback_without_ssh_matches_or_is_documented(case: SshCase, case_dir: Path) -> None:
    """Where no ssh client exists, asyncssh reads the config: the same, or a known difference."""
    config = _config(case, case_dir)
    openssh = _nodeload(case, case_dir, config)
    try:
        fallback = _nodeload(case, case_dir, config, client="")
    except UsageError as exc:
        assert case.name in FALLBACK_DIFFERS, f"the fallback refuses: {exc}"
        return
    theirs, ours = [_essentials(h) for h in openssh], [_essentials(h) for h in fallback]
    if case.name in FALLBACK_DIFFERS:
        assert ours != theirs, (
            f"documented as differing, but the fallback agrees: {FALLBACK_DIFFERS[case.name]}"
        )
    else:
        assert ours == theirs


def _essentials(hop: Hop) -> tuple[object, ...]:
    return hop.hostname, hop.port, hop.user, hop.proxy_command, hop.host_key_alias, hop.user_known_hosts


def test_without_f_the_user_and_system_configs_are_read_as_ssh_reads_them(tmp_path: Path) -> None:
    """No -F: ~/.ssh/config (the password database's home, as OpenSSH) then /etc/ssh/ssh_config.
    Both are swapped for the test's own in a mount namespace of the command's (nothing of this
    machine's is touched), and ``nodeload nodes`` must say what ``ssh -G`` says there."""
    import json
    import pwd
    import sys

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host sysnode\n  User from-user-config\n")
    system = tmp_path / "system_config"
    system.write_text("Host sysnode\n  HostName 127.0.0.99\n  Port 2299\n  User from-system\n")
    me = pwd.getpwuid(os.getuid())
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{me.pw_name}:x:{me.pw_uid}:{me.pw_gid}::{home}:/bin/sh\n")
    script = (
        'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/ssh/ssh_config && shift 2 && '
        'ssh -G sysnode </dev/null && exec "$@"'
    )
    nodes = [sys.executable, "-m", "nodeload", "nodes", "--node", "sysnode", "--json"]
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    done = subprocess.run(
        [*namespace, str(passwd), str(system), *nodes],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed, _, document = done.stdout.partition("{")
    openssh = dict(line.partition(" ")[::2] for line in printed.splitlines())
    (node,) = json.loads("{" + document)["nodes"]
    ours = node["ssh"]
    assert (ours["hostname"], str(ours["port"]), ours["user"]) == (
        openssh["hostname"], openssh["port"], openssh["user"]
    ) == ("127.0.0.99", "2299", "from-user-config")  # fmt: skip
    assert ours["user_known_hosts"][0] == f"{home}/.ssh/known_hosts"
