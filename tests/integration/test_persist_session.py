"""A real persistent session process (nodeload.persist.server), fed what a careless or hostile
caller might send: it answers, and stays up for the next push. No node is involved."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeload.cli import handover as client
from tests.helpers.users import give_away, needs_root

pytestmark = pytest.mark.integration


@pytest.fixture()
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    runtime = Path(tempfile.mkdtemp(prefix="nl-"))  # short: the socket path must fit sun_path
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with client._connected(start=True):  # started, and answering
        pass
    yield client.socket_path()
    client.stop()
    shutil.rmtree(runtime, ignore_errors=True)


def _ask(path: Path, raw: bytes) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(path))
        conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line]


@pytest.mark.parametrize(
    ("request_line", "said"),
    [
        (b'{"argv": ["persist", "stop"], "env": {}, "persist": 60}\n', "only pushes are handed to a session"),
        (b'{"argv": ["push", "x"], "env": ["not", "a", "dict"], "persist": 60}\n', "a malformed environment"),
        (b'{"argv": ["push", "x"], "env": {}, "persist": "abc"}\n', "a malformed duration"),
    ],
)
def test_a_malformed_request_is_refused_and_the_session_stays(
    session: Path, request_line: bytes, said: str
) -> None:
    answers = _ask(session, request_line)
    assert answers[-1] == {"exit": 2}
    assert said in str(answers[0]["data"])
    assert client.running()


def test_garbage_and_usage_errors_do_not_end_the_session(session: Path, tmp_path: Path) -> None:
    assert _ask(session, b"this is not json\n") == []  # dropped
    usage = {"argv": ["push", "--parallel", "zero", "img"], "env": {"PATH": "/usr/bin"}, "persist": 60,
             "cwd": str(tmp_path)}  # fmt: skip
    answers = _ask(session, json.dumps(usage).encode() + b"\n")
    assert answers[0] == {"accepted": True} and answers[-1] == {"exit": 2}  # argparse's own status
    assert "invalid int value: 'zero'" in "".join(str(a.get("data", "")) for a in answers)
    assert client.running()


@pytest.fixture()
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime directory of this user's (short: it may end up in a socket path); the session
    started in it is stopped afterwards."""
    runtime = Path(tempfile.mkdtemp(prefix="nl-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime
    with contextlib.suppress(client.SessionError, OSError):
        client.stop()
    shutil.rmtree(runtime, ignore_errors=True)


def test_links_planted_in_the_session_directory_are_not_followed(runtime: Path, tmp_path: Path) -> None:
    sock = client.socket_path()
    victim, created = tmp_path / "victim", tmp_path / "created"
    victim.write_text("precious\n")
    sock.with_suffix(".log").symlink_to(victim)
    sock.with_suffix(".lock").symlink_to(created)
    with client._connected(start=True):
        pass
    assert client.running()
    assert victim.read_text() == "precious\n" and not created.exists()
    assert "nodeload persistent session on" in sock.with_suffix(".log").read_text()


@needs_root
def test_a_runtime_dir_of_another_user_with_planted_links_is_not_used(
    runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = client.socket_path().name  # the session's, as it would be in $XDG_RUNTIME_DIR
    theirs = Path(tempfile.mkdtemp(prefix="nl-theirs-"))
    planted = theirs / f"nodeload-{os.getuid()}"
    planted.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for suffix in (".log", ".lock"):
        (planted / name).with_suffix(suffix).symlink_to(victim)
    give_away(theirs, planted, *planted.iterdir())
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))
    monkeypatch.setattr(client, "USER_RUNTIME", str(tmp_path / "no-login-session"), raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(runtime))  # where the session goes instead
    try:
        with client._connected(start=True):
            pass
        assert client.running() and client.socket_path() == runtime / f"nodeload-{os.getuid()}" / name
    finally:
        client.stop()
        shutil.rmtree(theirs)
    assert victim.read_text() == "precious\n"


def test_a_runtime_dir_too_deep_for_a_socket_path_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 90)  # bound and reached as /proc/self/fd/N/NAME
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    try:
        with client._connected(start=True):
            pass
        assert client.running() and len(os.fsencode(client.socket_path())) > 108
    finally:
        client.stop()


@needs_root
def test_the_command_line_passes_over_a_runtime_dir_of_another_user_and_says_why(tmp_path: Path) -> None:
    theirs, ours = (Path(tempfile.mkdtemp(prefix=prefix)) for prefix in ("nl-theirs-", "nl-"))
    give_away(theirs)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(theirs), "TMPDIR": str(ours), "NODELOAD_PERSIST": "1m"}

    def nodeload(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "nodeload", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    try:
        push = nodeload("push", "--debug", f"oci:{tmp_path / 'missing'}", "--node", "127.0.0.1")
        status = nodeload("persist", "status")
        left_in_theirs = list(theirs.iterdir())
    finally:
        nodeload("persist", "stop")
        shutil.rmtree(theirs)
        shutil.rmtree(ours)
    assert f"not in {theirs} ($XDG_RUNTIME_DIR): {theirs} belongs to" in push.stderr
    assert "pushing without one" not in push.stderr  # the session took it (and it failed there)
    assert status.returncode == 0, status
    # where it went: $TMPDIR, or the login session's runtime directory where there is one
    assert status.stdout.startswith(("running: " + str(ours), f"running: /run/user/{os.getuid()}/")), status
    assert left_in_theirs == []
