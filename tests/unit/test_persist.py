"""The command line's side of persistent sessions: where the socket lives, who may use it, durations."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeload.cli import handover as client
from nodeload.cli.arguments import _duration
from nodeload.cli.handover import SessionDir, SessionError, session_dir, socket_path
from tests.helpers.users import give_away, needs_root


def test_the_session_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = session_dir()
    assert made == tmp_path / f"nodeload-{os.getuid()}" and (made.stat().st_mode & 0o777) == 0o700
    made.chmod(0o755)  # someone else could enter: refused, not used
    with pytest.raises(SessionError, match="nobody else may enter"):
        session_dir()


@pytest.mark.parametrize(
    ("make_theirs", "why"),
    [
        pytest.param(give_away, "belongs to", marks=needs_root, id="another user's"),
        pytest.param(lambda d: d.chmod(0o777), "writable by others", id="anyone's to write"),
    ],
)
def test_a_runtime_dir_others_can_change_is_passed_over(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    make_theirs: Callable[[Path], None],
    why: str,
) -> None:
    # root with another user's environment (sudo -E): their $XDG_RUNTIME_DIR, where they can swap
    # the session's directory for one of links
    theirs, ours = tmp_path / "theirs", tmp_path / "tmp"
    theirs.mkdir()
    ours.mkdir()
    make_theirs(theirs)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))
    monkeypatch.setattr(client, "USER_RUNTIME", str(tmp_path / "no-login-session"), raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(ours))
    with caplog.at_level(logging.DEBUG, logger="nodeload.cli.handover"):
        made = session_dir()
    assert made == ours / f"nodeload-{os.getuid()}" and list(theirs.iterdir()) == []
    assert f"not in {theirs} ($XDG_RUNTIME_DIR)" in caplog.text and why in caplog.text


def test_a_sticky_runtime_dir_is_shared_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path.chmod(0o1777)  # as /tmp: nobody can rename or replace what is ours in it
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert session_dir() == tmp_path / f"nodeload-{os.getuid()}"


def test_a_session_directory_that_is_a_link_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / f"nodeload-{os.getuid()}").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(SessionError, match=r"nobody else may enter .*: it is a symbolic link; remove it"):
        session_dir()


def test_the_session_directory_is_held_not_looked_up_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    with SessionDir.open() as where:
        where.path.rename(tmp_path / "moved")  # swapped, once checked, for a directory of links
        where.path.mkdir(mode=0o700)
        (where.path / "session.log").symlink_to(victim)
        (where.path / "session.sock").symlink_to(victim)
        log = where.open_file("session.log", os.O_WRONLY | os.O_APPEND)
        os.write(log, b"started\n")
        os.close(log)
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(where.address("session.sock"))
            assert len(where.address("session.sock")) < 108
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "moved" / "session.log").read_text() == "started\n"
    assert stat.S_ISSOCK((tmp_path / "moved" / "session.sock").lstat().st_mode)


def test_what_is_not_a_file_of_ours_in_the_session_directory_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    with SessionDir.open() as where:
        (where.path / "a.log").symlink_to(victim)
        (where.path / "b.lock").symlink_to(tmp_path / "created")
        os.mkfifo(where.path / "c.log")  # opening it for writing would hang
        for name in ("a.log", "b.lock", "c.log"):
            os.close(where.open_file(name, os.O_WRONLY | os.O_APPEND))
            assert stat.S_ISREG((where.path / name).lstat().st_mode), name
        assert not where.holds_socket("a.log")
    assert victim.read_text() == "precious\n" and not (tmp_path / "created").exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600.0), ("1h", 3600.0), ("90s", 90.0), ("600", 600.0), ("off", None), ("0", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["forever", "-5m", "25h", "m"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        _duration(text)


def test_python_and_python3_of_one_venv_find_the_same_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys
    import tempfile

    runtime = Path(tempfile.mkdtemp(prefix="nl-"))  # short: the socket path must fit sun_path
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    alias = tmp_path / "python-alias"
    alias.symlink_to(sys.executable)
    first = socket_path()
    monkeypatch.setattr(sys, "executable", str(alias))
    assert socket_path() == first  # `nodeload persist stop` finds what `python -m nodeload` started
    shutil.rmtree(runtime)
