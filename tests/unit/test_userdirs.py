"""Which directories nodeload keeps its files in: none that another user could redirect
(root running with another user's environment: ``sudo -E``, ``su`` without ``-``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nodeload import userdirs
from nodeload.errors import SourceError
from nodeload.sandbox import node_image
from nodeload.sources.layer_cache import default_cache_dir
from nodeload.userdirs import _user, untrusted
from tests.helpers.users import OTHER_UID, give_away, needs_root


@needs_root
def test_a_cache_of_another_user_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    give_away(theirs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(theirs))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ours = tmp_path / "home" / ".cache" / "nodeload"
    with caplog.at_level(logging.DEBUG, logger="nodeload.userdirs"):
        assert default_cache_dir() == ours
    assert node_image.cache_dir() == ours  # the sandbox's cache too
    assert f"not using {theirs / 'nodeload'} (from $XDG_CACHE_HOME)" in caplog.text


@needs_root
def test_with_no_cache_of_ours_the_error_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    give_away(theirs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(theirs))
    monkeypatch.setenv("HOME", str(theirs))
    monkeypatch.setattr(userdirs, "_account_cache", lambda: str(theirs / ".cache"))
    with pytest.raises(SourceError, match=r"no cache directory of yours: .* belongs to .*set XDG_CACHE_HOME"):
        default_cache_dir()
    with pytest.raises(node_image.SandboxError, match="no cache directory of yours"):
        node_image.cache_dir()


@needs_root
def test_a_directory_of_ours_inside_another_users_is_not_safe(tmp_path: Path) -> None:
    # left by an earlier `sudo -E` run in their home: they can rename it and put a link instead
    home = tmp_path / "alice"
    (home / ".cache" / "nodeload").mkdir(parents=True)
    give_away(home)
    assert untrusted(home / ".cache" / "nodeload") == f"{home} belongs to {_user(OTHER_UID)}"


@needs_root
def test_links_are_checked_and_so_is_the_way_to_their_targets(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    give_away(theirs)
    (tmp_path / "our-link").symlink_to(ours)
    assert untrusted(tmp_path / "our-link" / "nodeload") is None
    (tmp_path / "their-link").symlink_to("ours")  # relative
    give_away(tmp_path / "their-link")
    assert "their-link belongs to" in str(untrusted(tmp_path / "their-link" / "nodeload"))
    (tmp_path / "to-theirs").symlink_to(theirs)
    assert f"{theirs} belongs to" in str(untrusted(tmp_path / "to-theirs" / "nodeload"))
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert "too many links" in str(untrusted(tmp_path / "loop" / "nodeload"))


def test_only_sticky_directories_may_be_shared(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert untrusted(shared / "nodeload") == f"{shared} is writable by others (and not sticky)"
    shared.chmod(0o1777)  # as /tmp: what is ours in it stays ours
    assert untrusted(shared / "nodeload") is None
    assert untrusted(shared / "missing" / "deeper") is None  # created by us, as we go
    assert untrusted("relative/cache") == "relative/cache is not an absolute path"


def test_a_cache_path_through_a_file_is_left_to_fail_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert default_cache_dir() == tmp_path / "file" / "nodeload"  # "cannot use the layer cache" later
    assert os.path.isfile(tmp_path / "file")
