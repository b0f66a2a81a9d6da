"""The command line's side of persistent sessions: where the socket lives, who may use it, durations."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from nodeload.cli.arguments import _duration
from nodeload.persist.client import SessionError, session_dir, socket_path


def test_the_session_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = session_dir()
    assert made == tmp_path / f"nodeload-{os.getuid()}" and (made.stat().st_mode & 0o777) == 0o700
    made.chmod(0o755)  # someone else could enter: refused, not used
    with pytest.raises(SessionError, match="nobody else may enter"):
        session_dir()


def test_a_socket_path_too_long_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    with pytest.raises(SessionError, match="too long for a unix socket; set XDG_RUNTIME_DIR or TMPDIR"):
        socket_path()


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
