"""The docker-daemon source against a fake Engine API (the real engine: tests/integration)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from nodeload.errors import ImageNotFound, SourceError
from nodeload.graph import resolve
from nodeload.platforms import Platform
from nodeload.reference import normalize
from nodeload.sources import LayerCache
from nodeload.sources.docker_daemon import engine_api, open_docker_daemon
from tests.helpers.docker_archive import SavedImage, docker_archive_bytes, saved_image


class FakeEngine:
    """Inspect and save, as the Engine API answers them, for a few images."""

    def __init__(self, *images: SavedImage, layout: str = "legacy", drop_config: bool = False) -> None:
        self.images, self.layout, self.drop_config = images, layout, drop_config
        self.saves: list[str] = []

    def _find(self, name: str) -> SavedImage:
        for image in self.images:
            if name in (image.image_id, image.image_id[7:19]) or normalize(name) in map(
                normalize, image.tags
            ):
                return image
        raise docker.errors.ImageNotFound(f"No such image: {name}")

    def inspect_image(self, image: str) -> dict[str, Any]:
        found = self._find(image)
        return {"Id": found.image_id, "RepoTags": list(found.tags), "RootFS": {"Layers": found.diff_ids}}

    def get_image(self, image: str, chunk_size: int | None = None) -> Iterator[bytes]:
        self.saves.append(image)
        found = self._find(image)
        if self.drop_config:  # as the containerd image store: config not named after the ID
            found = SavedImage(found.tags, found.layers, found.config + b" ")
        data = docker_archive_bytes([found], layout=self.layout)
        step = chunk_size or 4096
        return iter([data[i : i + step] for i in range(0, len(data), step)])


@pytest.fixture()
def cache(tmp_path: Path) -> LayerCache:
    return LayerCache(tmp_path / "cache")


def _layers_decompress_to(source: Any, image: SavedImage) -> None:
    graph = resolve(source, Platform("linux", "amd64"))
    assert graph.config.data == image.config
    assert graph.config.desc.digest == image.image_id
    for desc, layer in zip(graph.layers, image.layers, strict=True):
        with source.open_blob(desc) as stream:
            assert gzip.decompress(stream.read()) == layer.tar


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_cold_then_warm(cache: LayerCache, layout: str) -> None:
    image = saved_image(["app:v1"], [1, 2, 3])
    engine = FakeEngine(image, layout=layout)
    with open_docker_daemon("app:v1", api=engine, cache=cache) as cold:
        _layers_decompress_to(cold, image)
        assert cold.reference == "docker.io/library/app:v1"
        digest = cold.root.digest
    assert (len(engine.saves), cache.compressions) == (1, 3)

    warm_cache = LayerCache(cache.root)
    with open_docker_daemon("app:v1", api=engine, cache=warm_cache) as warm:
        assert warm.root.digest == digest
    assert (len(engine.saves), warm_cache.compressions) == (1, 0)  # no save at all


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_only_the_changed_layer_is_compressed(cache: LayerCache, layout: str) -> None:
    base = saved_image(["app:v1"], [1, 2], size=50_000)
    changed = saved_image(["app:v2"], [1, 2, 4], size=50_000)
    engine = FakeEngine(base, changed, layout=layout)
    open_docker_daemon("app:v1", api=engine, cache=cache).close()
    again = LayerCache(cache.root)
    with open_docker_daemon("app:v2", api=engine, cache=again) as source:
        _layers_decompress_to(source, changed)
    assert (len(engine.saves), again.compressions) == (2, 1)  # one save for each image


def test_a_wrong_size_guess_costs_a_second_save_pass(cache: LayerCache) -> None:
    base = saved_image(["app:v1"], [1], size=50_000)
    # Layer 5 comes first in the save stream and has the size of cached layer 1:
    # it is only hashed at first, then compressed in a second pass.
    changed = saved_image(["app:v2"], [5, 1], size=50_000)
    engine = FakeEngine(base, changed)
    open_docker_daemon("app:v1", api=engine, cache=cache).close()
    again = LayerCache(cache.root)
    with open_docker_daemon("app:v2", api=engine, cache=again) as source:
        _layers_decompress_to(source, changed)
    assert (len(engine.saves), again.compressions) == (3, 1)


def test_a_new_layer_of_a_seen_size_needs_no_second_pass(cache: LayerCache) -> None:
    base = saved_image(["app:v1"], [1], size=50_000)
    changed = saved_image(["app:v2"], [1, 5], size=50_000)  # layer 1 is confirmed first
    engine = FakeEngine(base, changed)
    open_docker_daemon("app:v1", api=engine, cache=cache).close()
    again = LayerCache(cache.root)
    with open_docker_daemon("app:v2", api=engine, cache=again) as source:
        _layers_decompress_to(source, changed)
    assert (len(engine.saves), again.compressions) == (2, 1)


def test_by_image_id_the_reference_is_the_first_tag(cache: LayerCache) -> None:
    image = saved_image(["app:v1", "app:latest"], [1])
    engine = FakeEngine(image)
    with open_docker_daemon(image.image_id[7:19], api=engine, cache=cache) as source:
        assert source.reference == "docker.io/library/app:v1"
    with open_docker_daemon("app", api=engine, cache=cache) as source:
        assert source.reference == "docker.io/library/app:latest"


def test_missing_image(cache: LayerCache) -> None:
    with pytest.raises(ImageNotFound, match=r"'nope:1' not found in the local Docker daemon \(docker images"):
        open_docker_daemon("nope:1", api=FakeEngine(), cache=cache)


def test_save_without_a_config_named_after_the_id(cache: LayerCache) -> None:
    engine = FakeEngine(saved_image(["app:v1"], [1]), drop_config=True)
    with pytest.raises(SourceError, match=r"containerd image store.*docker-archive"):
        open_docker_daemon("app:v1", api=engine, cache=cache)


def test_unreachable_docker_says_how_to_point_at_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(SourceError, match=r"Docker is not reachable.*DOCKER_HOST"):
        engine_api()
