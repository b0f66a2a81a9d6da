"""The docker-daemon and docker-archive sources against the real local Docker engine.

What every source does (blobs and digests, offsets, the image's name, a missing image) is
checked in test_source_conformance.py; here, what is particular to the engine: the image
ID and diffIDs, the layer cache, docker save passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.errors import SourceError
from nodeload.graph import resolve
from nodeload.image import ImageSource, read_document
from nodeload.platforms import Platform
from nodeload.sources import LayerCache, open_source
from nodeload.sources.compress import hash_stream, open_uncompressed
from nodeload.sources.docker_archive import open_docker_archive
from nodeload.sources.docker_daemon import EngineAPI, open_docker_daemon
from nodeload.sources.streams import CHUNK
from tests.helpers.docker_images import build_image, docker_client, remove_images

pytestmark = pytest.mark.integration

# Per process, so that concurrent sessions (pytest-xdist workers) do not collide.
V1 = f"nodeload-test/source-{os.getpid()}:v1"
V2 = f"nodeload-test/source-{os.getpid()}:v2"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        client = docker_client()
    except Exception as exc:  # no socket, no permission, daemon down...
        pytest.skip(f"no Docker engine reachable ({exc}); start one: dockerd >/var/log/dockerd.log 2>&1 &")
    remove_images(client)  # leftovers of killed sessions
    yield client
    remove_images(client, mine=True)
    client.close()


@pytest.fixture(scope="module")
def images(client: docker.DockerClient) -> dict[str, str]:
    """Two images, v2 = v1 + one more layer; tag -> image ID."""
    v1 = build_image(client, V1, [(1, 300_000), (2, 200_000), (3, 300_000)])
    v2 = build_image(client, V2, [(4, 100_000)], base=V1)
    return {V1: v1, V2: v2}


class CountingAPI:
    """The real Engine API, counting docker save calls."""

    def __init__(self, api: EngineAPI) -> None:
        self.api, self.saves = api, 0

    def inspect_image(self, image: str) -> dict[str, Any]:
        return self.api.inspect_image(image)

    def get_image(self, image: str, chunk_size: int | None = None) -> Iterator[bytes]:
        self.saves += 1
        return self.api.get_image(image, chunk_size=chunk_size)


@pytest.fixture()
def api(client: docker.DockerClient) -> CountingAPI:
    return CountingAPI(client.api)


def _check_against_docker(source: ImageSource, client: docker.DockerClient, tag: str) -> None:
    info = client.api.inspect_image(tag)
    graph = resolve(source, Platform("linux", "amd64"))
    assert graph.config.desc.digest == info["Id"]  # the config is Docker's, byte for byte
    assert list(graph.diff_ids) == info["RootFS"]["Layers"]
    for desc, diff_id in zip(graph.layers, graph.diff_ids, strict=True):
        # By magic bytes: skopeo --preserve-digests keeps Docker's plain tars (labelled gzip).
        with source.open_blob(desc) as stream, open_uncompressed(stream) as tar:
            assert hash_stream(tar)[0] == diff_id


def test_reads_a_local_image(client: docker.DockerClient, images: dict[str, str], tmp_path: Path) -> None:
    with open_docker_daemon(V1, api=client.api, cache=LayerCache(tmp_path)) as source:
        assert source.rewritable
        _check_against_docker(source, client, V1)


def test_warm_run_calls_no_save_and_compresses_nothing(
    images: dict[str, str], api: CountingAPI, tmp_path: Path
) -> None:
    with open_docker_daemon(V1, api=api, cache=LayerCache(tmp_path)) as cold:
        digest = cold.root.digest
    assert api.saves == 1
    blobs = {p: p.stat().st_mtime_ns for p in (tmp_path / "layers" / "sha256").glob("*.tar.gz")}
    warm_cache = LayerCache(tmp_path)
    with open_docker_daemon(images[V1][7:19], api=api, cache=warm_cache) as warm:
        assert warm.root.digest == digest  # same image, same manifest digest
    assert (api.saves, warm_cache.compressions) == (1, 0)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "layers" / "sha256").glob("*.tar.gz")} == blobs


def test_a_new_layer_is_the_only_one_compressed(
    client: docker.DockerClient, images: dict[str, str], api: CountingAPI, tmp_path: Path
) -> None:
    open_docker_daemon(V1, api=api, cache=LayerCache(tmp_path)).close()
    cache = LayerCache(tmp_path)
    with open_docker_daemon(V2, api=api, cache=cache) as source:
        _check_against_docker(source, client, V2)
    assert cache.compressions == 1
    assert api.saves in (2, 3)  # a third only if the new layer's size equals a cached one's


def test_docker_save_archive_gives_the_same_manifest(
    client: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    archive = tmp_path / "saved.tar"
    with archive.open("wb") as out:
        for chunk in client.api.get_image(V1, chunk_size=CHUNK):
            out.write(chunk)
    cache = LayerCache(tmp_path / "cache")
    with open_source(f"docker-archive:{archive}:{V1}", cache=cache) as from_archive:
        _check_against_docker(from_archive, client, V1)
        digest = from_archive.root.digest
    with open_docker_daemon(V1, api=client.api, cache=LayerCache(tmp_path / "fresh")) as from_daemon:
        assert from_daemon.root.digest == digest  # compressed independently, same bytes


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")
def test_skopeo_copy_reads_back_with_the_image_id(
    client: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    # --preserve-digests keeps Docker's config bytes (a conversion to OCI would rewrite them).
    copy = ["skopeo", "copy", "-q", "--preserve-digests", f"docker-daemon:{V1}", f"oci:{layout}:v1"]
    subprocess.run(copy, check=True)
    with open_source(f"oci:{layout}:v1") as source:
        assert source.rewritable is False
        manifest = json.loads(read_document(source, source.root))
        assert manifest["config"]["digest"] == images[V1]
        _check_against_docker(source, client, V1)


def test_bare_reference_uses_the_daemon(
    images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with open_source(V1) as source:
        assert json.loads(read_document(source, source.root))["config"]["digest"] == images[V1]
    assert (tmp_path / "nodeload" / "layers" / "sha256").is_dir()


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_a_real_docker_save_of_two_images(
    client: docker.DockerClient, images: dict[str, str], tmp_path: Path
) -> None:
    archive = tmp_path / "both.tar"
    subprocess.run(["docker", "save", "-o", str(archive), V1, V2], check=True)
    cache = LayerCache(tmp_path / "cache")
    with pytest.raises(SourceError, match="holds 2 images"):
        open_docker_archive(archive, cache=cache)
    for tag in (V1, V2):
        with open_source(f"docker-archive:{archive}:{tag}", cache=cache) as source:
            assert source.reference == f"docker.io/{tag}"
            _check_against_docker(source, client, tag)
