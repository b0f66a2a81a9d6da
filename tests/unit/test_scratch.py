"""Where nodeload makes its temporary directories (nodeload/scratch.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from nodeload import scratch
from tests.helpers.users import give_away, needs_root


@pytest.fixture()
def tmpdir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """$TMPDIR set to a fresh directory (tempfile forgets the one it found before)."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return directory


def test_private_directories_go_to_tmpdir(tmpdir_env: Path) -> None:
    made = Path(scratch.mkdtemp("nodeload-"))
    try:
        assert made.parent == tmpdir_env
        assert made.name.startswith(f"nodeload-{os.getpid()}-")
        assert made.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(made)


@needs_root
def test_a_tmpdir_another_user_owns_is_passed_over(tmpdir_env: Path) -> None:
    """Root with another user's TMPDIR (sudo -E): that user could move a fresh 0700 directory of
    root's away and put one of theirs in its place, and a tunnel's socket would be theirs."""
    give_away(tmpdir_env)
    assert scratch.temp_root() == "/tmp"
    made = Path(scratch.mkdtemp("nodeload-"))
    try:
        assert made.parent == Path("/tmp")
    finally:
        shutil.rmtree(made)
