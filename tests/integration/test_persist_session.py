"""A real persistent session process (nodeload.persist.server), fed what a careless or hostile
caller might send: it answers, and stays up for the next push. No node is involved."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeload.persist import client

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
