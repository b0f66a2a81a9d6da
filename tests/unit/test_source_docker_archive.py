"""docker save tarballs (docker-archive:), legacy and Docker 25+ OCI-style layouts."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest

from nodeload.errors import ImageNotFound, SourceError
from nodeload.graph import resolve
from nodeload.image import (
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_DOCKER_MANIFEST,
    ImageSource,
    read_document,
)
from nodeload.platforms import Platform
from nodeload.sources import LayerCache, open_source
from nodeload.sources.docker_archive import open_docker_archive
from tests.helpers.docker_archive import SavedImage, saved_image, write_docker_archive


@pytest.fixture()
def cache(tmp_path: Path) -> LayerCache:
    return LayerCache(tmp_path / "cache")


def _check_image(source: ImageSource, image: SavedImage) -> None:
    """The synthesized manifest describes the image exactly, layers decompress to the tars."""
    graph = resolve(source, Platform("linux", "amd64"))
    assert graph.manifest.desc.media_type == MEDIA_DOCKER_MANIFEST
    assert graph.config.data == image.config
    assert graph.config.desc.digest == image.image_id
    assert graph.config.desc.media_type == MEDIA_DOCKER_CONFIG
    assert list(graph.diff_ids) == image.diff_ids
    for desc, layer in zip(graph.layers, image.layers, strict=True):
        assert desc.media_type == MEDIA_DOCKER_LAYER_GZIP
        with source.open_blob(desc) as stream:
            assert gzip.decompress(stream.read()) == layer.tar


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_reads_both_layouts(tmp_path: Path, cache: LayerCache, layout: str) -> None:
    image = saved_image(["app:v1"], [1, 2, 1])  # a repeated layer: a symlink in legacy
    archive = write_docker_archive(tmp_path / "a.tar", [image], layout=layout)
    with open_source(f"docker-archive:{archive}", cache=cache) as source:
        assert source.rewritable is True
        assert source.reference == "docker.io/library/app:v1"
        _check_image(source, image)
    assert cache.compressions == 2  # the repeated layer is compressed once


def test_same_image_same_manifest_digest_and_no_recompression(tmp_path: Path, cache: LayerCache) -> None:
    image = saved_image(["app:v1"], [3, 4])
    legacy = write_docker_archive(tmp_path / "legacy.tar", [image])
    oci = write_docker_archive(tmp_path / "oci.tar", [image], layout="oci")
    with open_docker_archive(legacy, cache=cache) as first:
        digest = first.root.digest
    # Compressed blobs are never rewritten (records are touched on use: the cache's LRU clock).
    mtimes = {p: p.stat().st_mtime_ns for p in cache.layers_dir.glob("*.tar.gz")}
    warm = LayerCache(cache.root)
    with open_docker_archive(oci, cache=warm) as second:
        assert second.root.digest == digest
    assert warm.compressions == 0
    assert {p: p.stat().st_mtime_ns for p in cache.layers_dir.glob("*.tar.gz")} == mtimes


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_gzip_layers_in_the_archive_are_used_as_they_are(
    tmp_path: Path, cache: LayerCache, layout: str
) -> None:
    image = saved_image(["app:v1"], [5, 6])
    archive = write_docker_archive(tmp_path / "a.tar", [image], layout=layout, gzip_layers=True)
    with open_docker_archive(archive, cache=cache) as source:
        manifest = json.loads(read_document(source, source.root))
        assert [la["digest"] for la in manifest["layers"]] == [la.descriptor.digest for la in image.layers]
        _check_image(source, image)
    assert cache.compressions == 0


def test_compressed_archive(tmp_path: Path, cache: LayerCache) -> None:
    image = saved_image(["app:v1"], [7])
    archive = write_docker_archive(tmp_path / "a.tar", [image])
    packed = tmp_path / "a.tar.gz"
    packed.write_bytes(gzip.compress(archive.read_bytes()))
    with open_docker_archive(packed, cache=cache) as source:
        _check_image(source, image)


@pytest.fixture()
def two_images(tmp_path: Path) -> tuple[Path, SavedImage, SavedImage]:
    one = saved_image(["app:v1", "app:latest"], [8])
    two = saved_image(["registry.local:5000/team/other:v2"], [9])
    return write_docker_archive(tmp_path / "two.tar", [one, two]), one, two


@pytest.mark.parametrize(
    ("ref", "which", "reference"),
    [
        ("app:v1", 0, "docker.io/library/app:v1"),
        ("docker.io/library/app", 0, "docker.io/library/app:latest"),
        ("registry.local:5000/team/other:v2", 1, "registry.local:5000/team/other:v2"),
        ("@1", 1, "registry.local:5000/team/other:v2"),
    ],
)
def test_ref_selects_by_repo_tags(
    two_images: tuple[Path, SavedImage, SavedImage], cache: LayerCache, ref: str, which: int, reference: str
) -> None:
    archive, *images = two_images
    with open_docker_archive(archive, ref, cache=cache) as source:
        assert source.reference == reference
        assert json.loads(read_document(source, source.root))["config"]["digest"] == images[which].image_id


def test_several_images_need_a_ref(
    two_images: tuple[Path, SavedImage, SavedImage], cache: LayerCache
) -> None:
    with pytest.raises(SourceError, match=r"holds 2 images.*app:v1"):
        open_docker_archive(two_images[0], cache=cache)


@pytest.mark.parametrize("ref", ["app:v9", "@2", "@x"])
def test_unknown_ref(two_images: tuple[Path, SavedImage, SavedImage], cache: LayerCache, ref: str) -> None:
    with pytest.raises(ImageNotFound):
        open_docker_archive(two_images[0], ref, cache=cache)


def test_untagged_image_has_no_reference(tmp_path: Path, cache: LayerCache) -> None:
    archive = write_docker_archive(tmp_path / "a.tar", [saved_image([], [10])])
    with open_docker_archive(archive, cache=cache) as source:
        assert source.reference is None


def test_layer_that_does_not_match_its_diff_id(tmp_path: Path, cache: LayerCache) -> None:
    image = saved_image(["app:v1"], [11])
    wrong = SavedImage(
        image.tags, image.layers, image.config.replace(image.diff_ids[0][7:].encode(), b"0" * 64)
    )
    archive = write_docker_archive(tmp_path / "a.tar", [wrong])
    with pytest.raises(SourceError, match="does not match the config's diff_id"):
        open_docker_archive(archive, cache=cache)


def test_missing_manifest_json(tmp_path: Path, cache: LayerCache) -> None:
    full = write_docker_archive(tmp_path / "full.tar", [saved_image(["app:v1"], [12])])
    archive = tmp_path / "a.tar"
    with tarfile.open(full) as src, tarfile.open(archive, "w") as dst:
        for member in src.getmembers():
            if member.name != "manifest.json":
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    with pytest.raises(SourceError, match=r"a\.tar:manifest\.json: no such file"):
        open_docker_archive(archive, cache=cache)


def test_oci_style_docker_archive_is_also_an_oci_archive(tmp_path: Path) -> None:
    image = saved_image(["app:v1"], [13])
    archive = write_docker_archive(tmp_path / "a.tar", [image], layout="oci", gzip_layers=True)
    with open_source(f"oci-archive:{archive}", cache=LayerCache(tmp_path / "c")) as source:
        assert source.reference == "docker.io/library/app:v1"
        assert resolve(source, Platform("linux", "amd64")).config.desc.digest == image.image_id


def test_blobs_of_other_images_are_refused(tmp_path: Path, cache: LayerCache) -> None:
    archive = write_docker_archive(tmp_path / "a.tar", [saved_image(["app:v1"], [14])])
    other = saved_image([], [15]).layers[0].descriptor
    with open_docker_archive(archive, cache=cache) as source, pytest.raises(SourceError, match="not part of"):
        source.open_blob(other)
