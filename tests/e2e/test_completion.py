"""Shell completion in real shells: the script ``nodeload completion SHELL`` prints is loaded in
bash, zsh and fish (Debian's, installed by scripts/ensure-host.sh), and each shell's own
completion machinery runs the real ``nodeload`` on the PATH: commands, options, image names from
the real Docker engine (an image built here), node names from an inventory, an ssh config and a
config file written here.

- bash: its programmable completion, as readline calls it (COMP_WORDS/COMP_CWORD/COMP_LINE and
  the function ``complete -p`` names), every candidate read back from COMPREPLY;
- zsh: an interactive zsh on a pseudo-terminal with compinit, a Tab typed, and the line it left
  (a widget bound to a key writes $BUFFER to a file);
- fish: ``complete -C``, fish's own query of what a Tab would offer.
"""

from __future__ import annotations

import contextlib
import os
import pty
import secrets
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker
import pytest

from tests.helpers.docker_images import build_image, remove_images
from tests.helpers.shells import bash

pytestmark = pytest.mark.e2e

_RUN = secrets.token_hex(3)
IMAGE = f"nl-compl-{_RUN}/tiny:v1"
LABEL = "completion"
BIN = str(Path(sys.executable).parent)  # where the nodeload console script is


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> Iterator[str]:
    """A tiny image in the real engine, with a name no other test uses."""
    build_image(docker_client, IMAGE, [(7, 1024)], label=LABEL)
    yield IMAGE
    remove_images(docker_client, LABEL, mine=True)


@pytest.fixture()
def user(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with an inventory, an ssh config and no config file yet."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host gamma-{_RUN} delta-{_RUN}\n  User root\nHost *.lab\n  Port 2\n"
    )
    (tmp_path / "hosts.ini").write_text(f"[web]\nweb-{_RUN} ansible_host=127.0.0.1\n[db]\ndb-{_RUN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODELOAD_", "_ARC", "COMP_"))}
    env |= {
        "HOME": str(home),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(home / ".config"),
    }
    env["NODELOAD_TEST_DIR"] = str(tmp_path)
    return env


# -- bash ---------------------------------------------------------------------------------------


def test_bash_completes_commands_options_images_and_nodes(image: str, user: dict[str, str]) -> None:
    assert {"push", "nodes", "serve", "gc", "completion"} <= bash("nodeload ", user)
    assert bash("nodeload push --inv", user) == {"--inventory"}
    assert bash("nodeload push --export ", user) == {"auto", "save", "push"}
    assert bash("nodeload completion ", user) - {"-h", "--help"} == {"bash", "zsh", "fish"}
    # Image names from the real engine (bash breaks words at ':', argcomplete completes within).
    offered = bash(f"nodeload push nl-compl-{_RUN}", user)
    assert offered and all(image.endswith(word) or word == image for word in offered), offered
    # Node names: the ssh config's aliases (no wildcard pattern), then an inventory's hosts.
    assert bash("nodeload push x --node ", user) == {f"gamma-{_RUN}", f"delta-{_RUN}"}
    assert bash("nodeload nodes --inventory hosts.ini --node ", user) == {f"web-{_RUN}", f"db-{_RUN}"}
    assert bash("nodeload push x --inventory hosts.ini --limit w", user) == {"web", f"web-{_RUN}"}


def test_bash_offers_the_config_files_selection(user: dict[str, str]) -> None:
    config = Path(user["XDG_CONFIG_HOME"]) / "nodeload" / "config.toml"
    config.parent.mkdir(parents=True)
    inventory = Path(user["NODELOAD_TEST_DIR"]) / "hosts.ini"
    config.write_text(f'[defaults]\ninventory = "{inventory}"\n')
    assert bash("nodeload push x --node ", user) == {f"web-{_RUN}", f"db-{_RUN}"}
    config.write_text(f'[defaults]\nnode = ["root@epsilon-{_RUN}:2222"]\n')  # listed there, and ssh's
    assert bash("nodeload push x --node ", user) == {
        f"root@epsilon-{_RUN}:2222",
        f"gamma-{_RUN}",
        f"delta-{_RUN}",
    }
    # A broken file: nodeload completion still prints the script (a shell startup file runs it),
    # and completing stays quiet and offers what the parser knows.
    config.write_text("[push]\nno-such-option = 1\n")
    assert bash("nodeload push --inv", user) == {"--inventory"}


def test_without_an_engine_images_complete_to_nothing_quickly(user: dict[str, str]) -> None:
    env = user | {"DOCKER_HOST": f"unix://{user['NODELOAD_TEST_DIR']}/no-engine.sock"}
    started = time.monotonic()
    assert bash("nodeload push nl-compl-", env) == set()
    assert time.monotonic() - started < 10  # a process start under load; no engine wait at all


def test_a_node_source_that_does_not_answer_is_given_up(user: dict[str, str], tmp_path: Path) -> None:
    """An API server that accepts the connection and never answers (a socket nobody accepts on,
    on loopback): --node offers nothing once the bound has passed, and the shell gets its prompt."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        )
        started = time.monotonic()
        env = user | {"NODELOAD_COMPLETION_TIMEOUT": "2"}
        assert bash(f"nodeload push x --kubeconfig {kubeconfig} --node ", env) == set()
        took = time.monotonic() - started
    assert 2 <= took < 30, took


def test_a_completion_imports_no_grpc_asyncssh_kubernetes_or_docker(user: dict[str, str]) -> None:
    """What a Tab costs: the process argcomplete runs (its answer on fd 8), with Python's import log."""
    answer = Path(user["NODELOAD_TEST_DIR"]) / "answer"
    line = "nodeload push --inv"
    env = user | {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line}
    env |= {"COMP_POINT": str(len(line)), "COMP_TYPE": "9", "_ARGCOMPLETE_IFS": "\n", "ANSWER": str(answer)}
    done = subprocess.run(
        ["bash", "-c", 'exec "$@" 8>"$ANSWER"', "bash", sys.executable, "-X", "importtime", "-m", "nodeload"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert answer.read_text().split() == ["--inventory"]
    imported = {row.split("|")[-1].strip() for row in done.stderr.splitlines() if "|" in row}
    heavy = {name for name in imported if name.split(".")[0] in ("grpc", "asyncssh", "kubernetes", "docker")}
    assert not heavy, sorted(heavy)
    assert "argcomplete" in imported  # the import log is the completion process's


# -- zsh ----------------------------------------------------------------------------------------


class Terminal:
    """An interactive shell on a pseudo-terminal."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the shell
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, dict(env))
            finally:
                os._exit(127)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def drain(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 65536)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, 9)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _zsh_line(terminal: Terminal, typed: str, out: Path) -> str:
    """Type ``typed`` and a Tab; the line zsh then holds (^T writes it to ``out`` and clears it)."""
    out.unlink(missing_ok=True)
    terminal.type(typed + "\t\x14")
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        terminal.drain(0.2)
    assert out.exists(), terminal.seen.decode(errors="replace")[-2000:]
    return out.read_text()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is installed by scripts/ensure-host.sh")
def test_zsh_completes_through_its_completion_system(image: str, user: dict[str, str]) -> None:
    out = Path(user["NODELOAD_TEST_DIR"]) / "buffer"
    terminal = Terminal(["zsh", "-f", "-i"], user | {"TERM": "dumb"}, user["NODELOAD_TEST_DIR"])
    try:
        terminal.type(
            "autoload -Uz compinit && compinit -u\n"
            'eval "$(nodeload completion zsh)"\n'
            f"write-line() {{ print -rn -- $BUFFER > {out}; BUFFER= }}\n"
            "zle -N write-line; bindkey '^T' write-line\n"
        )
        terminal.drain(1)
        assert _zsh_line(terminal, "nodeload compl", out) == "nodeload completion "
        assert _zsh_line(terminal, "nodeload push --invent", out) == "nodeload push --inventory "
        assert _zsh_line(terminal, f"nodeload push nl-compl-{_RUN}", out) == f"nodeload push {image} "
        assert (
            _zsh_line(terminal, "nodeload push x --node gam", out) == f"nodeload push x --node gamma-{_RUN} "
        )
        typed = "nodeload push x --inventory hosts.ini --node db"
        assert _zsh_line(terminal, typed, out) == f"{typed}-{_RUN} "
    finally:
        terminal.close()


# -- fish ---------------------------------------------------------------------------------------


def fish(line: str, env: Mapping[str, str]) -> set[str]:
    """What fish's completion of ``line`` offers (``complete -C``), without descriptions."""
    script = f"nodeload completion fish | source; complete -C{_fish_quote(line)}"
    done = subprocess.run(
        ["fish", "--no-config", "-c", script],
        env=dict(env),
        cwd=env["NODELOAD_TEST_DIR"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {row.split("\t")[0] for row in done.stdout.splitlines() if row.strip()}


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is installed by scripts/ensure-host.sh")
def test_fish_completes_commands_options_images_and_nodes(image: str, user: dict[str, str]) -> None:
    assert {"push", "nodes", "completion"} <= fish("nodeload ", user)
    assert fish("nodeload push --inv", user) == {"--inventory"}
    assert fish(f"nodeload push nl-compl-{_RUN}", user) == {image}
    assert fish("nodeload push x --node ", user) == {f"gamma-{_RUN}", f"delta-{_RUN}"}
    assert fish("nodeload push x --inventory hosts.ini --node ", user) == {f"web-{_RUN}", f"db-{_RUN}"}
