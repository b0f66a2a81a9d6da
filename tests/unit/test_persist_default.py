"""When a push gets a persistent session by default, and how a session treats a caller that
stops reading (real sockets: a socket pair whose reader never reads)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from nodeload.cli.arguments import AUTO, DEFAULT_PERSIST, build_parser, persist_seconds
from nodeload.persist.server import _Caller


@pytest.mark.parametrize(
    ("terminal", "environ", "expected"),
    [
        (True, {}, DEFAULT_PERSIST),  # typed at a terminal: the edit-build-push loop
        (False, {}, None),  # a script, a pipe
        (True, {"CI": "true"}, None),
        (True, {"CI": "1"}, None),
        (True, {"CI": "false"}, DEFAULT_PERSIST),  # CI=false: not CI
        (True, {"CI": ""}, DEFAULT_PERSIST),
    ],
)
def test_left_to_decide_a_session_is_for_terminals_outside_ci(
    terminal: bool, environ: dict[str, str], expected: float | None
) -> None:
    assert persist_seconds(AUTO, terminal=terminal, environ=environ) == expected


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, AUTO),
        (["--persist", "1h"], {}, 3600.0),
        (["--persist", "off"], {}, None),
        (["--no-persist"], {"NODELOAD_PERSIST": "10m"}, None),  # the flag wins
        (["--persist", "30s"], {"NODELOAD_PERSIST": "0"}, 30.0),
        ([], {"NODELOAD_PERSIST": "0"}, None),
        ([], {"NODELOAD_PERSIST": "on"}, DEFAULT_PERSIST),
        ([], {"NODELOAD_PERSIST": "5m"}, 300.0),
    ],
)
def test_flags_then_environment_then_the_terminal_decide(
    argv: list[str], environ: dict[str, str], expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODELOAD_PERSIST", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args(["push", "app:dev", "--node", "n", *argv])
    assert args.persist == expected
    # Whatever was said, a decided value is what the push uses, terminal or not.
    if expected is not AUTO:
        assert persist_seconds(args.persist, terminal=True, environ={}) == expected


def test_a_caller_that_stops_reading_is_gone_and_its_push_interrupted() -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    interrupted = threading.Event()
    caller = _Caller(ours, interrupted.set, send_seconds=0.5)
    caller.start()
    start = time.monotonic()
    while not caller.gone.is_set() and time.monotonic() - start < 10:
        caller.send({"fd": 2, "data": "x" * 1000})  # a progress display drawing, unread
    assert caller.gone.is_set() and interrupted.is_set()
    assert time.monotonic() - start < 3  # the send timed out; it did not block the session
    ours.close()
    theirs.close()


def test_ctrl_c_on_the_caller_interrupts_but_its_last_words_still_go_to_it() -> None:
    ours, theirs = socket.socketpair()
    interrupted = threading.Event()
    caller = _Caller(ours, interrupted.set, send_seconds=5)
    caller.start()
    theirs.shutdown(socket.SHUT_WR)  # what the command line does on Ctrl-C
    assert interrupted.wait(5) and caller.left and not caller.gone.is_set()
    caller.send({"fd": 2, "data": "nodeload: interrupted; rerun the same command to resume\n"})
    caller.done()
    caller.send({"exit": 130})
    ours.shutdown(socket.SHUT_RDWR)
    received = b""
    while chunk := theirs.recv(65536):
        received += chunk
    assert b"interrupted; rerun" in received and received.endswith(b'{"exit": 130}\n')
    ours.close()
    theirs.close()


def test_a_caller_gone_after_its_push_interrupts_nothing() -> None:
    ours, theirs = socket.socketpair()
    interrupted = threading.Event()
    caller = _Caller(ours, interrupted.set, send_seconds=5)
    caller.start()
    caller.done()
    theirs.close()
    time.sleep(0.3)
    assert not interrupted.is_set()
    ours.close()
