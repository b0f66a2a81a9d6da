"""A persistent session by default, from a terminal only; and pushes that run in it at once.

Real processes against a real node: the CLI run as a user runs it, its standard error a
pseudo-terminal (as when typed in a shell) or a pipe (as in a script or CI). Each test has a
session directory of its own ($XDG_RUNTIME_DIR), so sessions never meet.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import nodeload

pytestmark = pytest.mark.e2e

WIRE_FIXED = 256 * 1024
NOTICE = "nodeload: started a background session"


@dataclass
class Terminal:
    """What a push run at a terminal printed there, what it printed on stdout, its status."""

    code: int
    screen: str
    stdout: str


@dataclass
class User:
    """A user of the node, with an environment of their own (no NODELOAD_PERSIST, no CI)."""

    sandbox: Sandbox
    env: dict[str, str]
    runtime: Path

    def argv(self, image: str, *args: str) -> list[str]:
        config = str(self.sandbox.ssh_config_path)
        return [sys.executable, "-m", "nodeload", "push", image, "--node", "node-1", "-F", config, *args]

    def at_terminal(self, image: str, *args: str, env: dict[str, str] | None = None) -> Terminal:
        """``nodeload push IMAGE --json ARGS`` with standard error on a pseudo-terminal."""
        controller, terminal = pty.openpty()
        screen: list[bytes] = []

        def read() -> None:
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the terminal's last writer closed it
                    return
                if not chunk:
                    return
                screen.append(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc = subprocess.run(
                self.argv(image, "--json", *args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=terminal,
                env=env or self.env,
                timeout=300,
                text=True,
            )
        finally:
            os.close(terminal)
            reader.join(timeout=10)
            os.close(controller)
        return Terminal(proc.returncode, b"".join(screen).decode(errors="replace"), proc.stdout)

    def session_running(self) -> bool:
        return nodeload("persist", "status", check=False, env=self.env).returncode == 0

    def ssh_connections(self) -> int:
        out = self.sandbox.node("node-1").check_output(
            ["ss", "-Htn", "state", "established", "( sport = :22 )"]
        )
        return len(out.splitlines())

    def session_log(self) -> str:
        (log,) = self.runtime.glob("nodeload-*/session-*.log")
        return log.read_text()


@pytest.fixture()
def user(node_sandbox: Sandbox, tmp_path: Path) -> Iterator[User]:
    runtime = Path(tempfile.mkdtemp(prefix="nl-def-"))  # short: the socket path must fit sun_path
    env = {k: v for k, v in os.environ.items() if k not in ("NODELOAD_PERSIST", "CI")}
    env |= {"XDG_RUNTIME_DIR": str(runtime), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    yield User(node_sandbox, env, runtime)
    nodeload("persist", "stop", check=False, env=env)
    shutil.rmtree(runtime, ignore_errors=True)


def _node(stdout: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(stdout)["nodes"][0]
    return result


def test_a_push_typed_at_a_terminal_keeps_a_session_for_the_next(
    user: User, app_images: dict[str, str]
) -> None:
    first = user.at_terminal(app_images["v1"])
    assert first.code == 0 and _node(first.stdout)["status"] == "ok", first
    assert first.screen.count(NOTICE) == 1, first.screen  # said once, on one line
    notice = next(line for line in first.screen.splitlines() if NOTICE in line)
    assert "10m" in notice and "nodeload persist stop" in notice and "--no-persist" in notice
    assert user.session_running() and user.ssh_connections() == 1  # kept for the next push

    second = user.at_terminal(app_images["v2"])
    warm = _node(second.stdout)
    assert second.code == 0 and warm["status"] == "ok", second
    assert NOTICE not in second.screen  # the session was there: nothing started, nothing said
    assert user.ssh_connections() == 1  # the same connection: no new SSH handshake
    assert warm["wire_bytes_sent"] <= 1.05 * warm["bytes_sent"] + WIRE_FIXED  # type: ignore[operator]
    assert user.session_log().count("started") == 2  # both pushes ran in the session


def test_no_session_without_a_terminal_under_ci_or_when_turned_off(
    user: User, app_images: dict[str, str]
) -> None:
    piped = subprocess.run(
        user.argv(app_images["v1"], "--json"), capture_output=True, text=True, env=user.env, timeout=300
    )
    assert piped.returncode == 0 and _node(piped.stdout)["status"] == "ok", piped.stderr
    assert NOTICE not in piped.stderr
    assert not user.session_running() and user.ssh_connections() == 0  # nothing stays behind

    ci = user.at_terminal(app_images["v1"], env={**user.env, "CI": "true"})
    assert ci.code == 0 and NOTICE not in ci.screen and not user.session_running(), ci
    off = user.at_terminal(app_images["v1"], "--no-persist")
    assert off.code == 0 and NOTICE not in off.screen and not user.session_running(), off
    zero = user.at_terminal(app_images["v1"], env={**user.env, "NODELOAD_PERSIST": "0"})
    assert zero.code == 0 and NOTICE not in zero.screen and not user.session_running(), zero
    assert user.ssh_connections() == 0

    # Asked for by name, a session starts anywhere, CI and pipes included.
    asked = subprocess.run(
        user.argv(app_images["v1"], "--json", "--persist", "2m"),
        capture_output=True,
        text=True,
        env={**user.env, "CI": "true"},
        timeout=300,
    )
    assert asked.returncode == 0 and NOTICE in asked.stderr and "2m" in asked.stderr
    assert user.session_running()


def test_pushes_from_one_shell_run_in_the_session_at_once(user: User, app_images: dict[str, str]) -> None:
    env = {**user.env, "NODELOAD_PERSIST": "2m"}
    nodeload("push", app_images["v1"], "--node", "node-1", "-F", str(user.sandbox.ssh_config_path), env=env)
    node = user.sandbox.node("node-1")
    node.shape(8)  # each push's new layers (21 MiB in a namespace of its own) take seconds
    try:
        pushes = [
            subprocess.Popen(
                user.argv(app_images[tag], "--json", "--namespace", f"ns-{tag}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for tag in ("v1", "v2")
        ]
        outputs = [p.communicate(timeout=300) for p in pushes]
    finally:
        node.unshape()
    results = [_node(out) for out, _ in outputs]
    assert all(r["status"] == "ok" for r in results), outputs
    # Each push had a connection of its own: its wire bytes are its own, not the other's.
    for result in results:
        assert result["wire_bytes_sent"] <= 1.05 * result["bytes_sent"] + WIRE_FIXED  # type: ignore[operator]
    events = _events(user.session_log())
    assert events == ["start", "end", "start", "start", "end", "end"], events  # the second began first
    assert user.ssh_connections() == 2  # both kept for what comes next


def test_a_push_from_another_directory_waits_for_the_running_ones(
    user: User, app_images: dict[str, str], tmp_path: Path
) -> None:
    env = {**user.env, "NODELOAD_PERSIST": "2m"}
    nodeload("push", app_images["v1"], "--node", "node-1", "-F", str(user.sandbox.ssh_config_path), env=env)
    node = user.sandbox.node("node-1")
    node.shape(8)
    try:
        first = subprocess.Popen(
            user.argv(app_images["v1"], "--json", "--namespace", "ns-a"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        while "ns-a' started" not in user.session_log():
            assert first.poll() is None, first.communicate()
        second = subprocess.run(
            user.argv(app_images["v2"], "--json", "--namespace", "ns-b"),
            capture_output=True,
            text=True,
            env=env,
            cwd=elsewhere,
            timeout=300,
        )
        out, err = first.communicate(timeout=300)
    finally:
        node.unshape()
    assert _node(out)["status"] == "ok" and _node(second.stdout)["status"] == "ok", (err, second.stderr)
    assert "waiting for the session's pushes from another directory or environment" in second.stderr
    log = user.session_log()
    assert _events(log) == ["start", "end", "start", "end", "start", "end"], log  # one after the other
    assert log.index("ns-a' started") < log.index("ns-b' started")


def _events(log: str) -> list[str]:
    """The session log's pushes, in order: each push's start and end."""
    return [
        "start" if " started" in line else "end"
        for line in log.splitlines()
        if " started" in line or "push ended" in line
    ]
