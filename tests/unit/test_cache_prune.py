"""``nodeload cache prune``: least recently used layers go first, and only what is asked."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from nodeload.cli import main
from nodeload.sources.layer_cache import LayerCache
from tests.helpers.users import give_away, needs_root


def _add(cache: LayerCache, seed: int, size: int = 64 * 1024) -> str:
    """Cache a layer of ``size`` distinct bytes; its diffID."""
    data = bytes([seed]) * size + os.urandom(size)
    layer = cache.add(io.BytesIO(data), {"sha256:" + hashlib.sha256(data).hexdigest()})
    assert layer is not None
    return layer.diff_id


def _age(cache: LayerCache, diff_id: str, seconds: float) -> None:
    record = cache.layers_dir / f"{diff_id.removeprefix('sha256:')}.json"
    past = time.time() - seconds
    os.utime(record, (past, past))


def test_older_than_drops_only_unused_layers(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    old, recent = _add(cache, 1), _add(cache, 2)
    _age(cache, old, 3 * 86400)
    pruned = cache.prune(older_than=timedelta(days=1))
    assert (pruned.layers, cache.lookup(old), cache.lookup(recent) is not None) == (1, None, True)
    assert pruned.freed > 64 * 1024 and pruned.kept > 0


def test_max_size_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    first, second, third = _add(cache, 3), _add(cache, 4), _add(cache, 5)
    _age(cache, first, 300)
    _age(cache, second, 100)
    _age(cache, third, 200)
    assert cache.lookup(first) is not None  # a lookup is a use: first is now the most recent
    one_layer = int(cache.prune().kept * 0.4)  # nothing asked: nothing dropped; 1.2 layers
    pruned = cache.prune(max_size=one_layer)
    assert pruned.layers == 2 and pruned.kept <= one_layer
    assert cache.lookup(first) is not None and cache.lookup(second) is None and cache.lookup(third) is None


def test_the_command_prunes_everything_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = LayerCache(tmp_path / "nodeload")
    diff = _add(cache, 6)
    assert main(["cache", "prune"]) == 0
    assert cache.lookup(diff) is None
    assert "removed 1 layer(s)" in capsys.readouterr().out


@needs_root
def test_prune_never_reaches_into_a_cache_of_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # root with another user's $XDG_CACHE_HOME (sudo -E), where they put a link to files of root's
    victim = LayerCache(tmp_path / "victim")
    kept = _add(victim, 7)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "nodeload").symlink_to(victim.root)
    give_away(theirs, theirs / "nodeload")
    monkeypatch.setenv("XDG_CACHE_HOME", str(theirs))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["cache", "prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"] == str(tmp_path / "home" / ".cache" / "nodeload")
    assert victim.lookup(kept) is not None
