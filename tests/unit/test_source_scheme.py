"""Parsing skopeo-style source names."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeload.errors import SourceError, UsageError
from nodeload.sources import SourceSpec, open_source, parse_source


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("myapp", "myapp"),
        ("myapp:dev", "myapp:dev"),
        ("localhost:5000/app:tag", "localhost:5000/app:tag"),  # colons, but no scheme
        ("docker:latest", "docker:latest"),  # an image named docker, not docker://
    ],
)
def test_bare_reference_means_docker_daemon(text: str, ref: str) -> None:
    assert parse_source(text) == SourceSpec("docker-daemon", None, ref)


@pytest.mark.parametrize(
    "text", ["docker-daemon:app:1", "docker-daemon:sha256:" + "a" * 64, "docker-daemon:0123456789ab"]
)
def test_docker_daemon_scheme(text: str) -> None:
    assert parse_source(text) == SourceSpec("docker-daemon", None, text.removeprefix("docker-daemon:"))


def test_image_id_is_accepted_bare() -> None:
    assert parse_source("sha256:" + "b" * 64).ref == "sha256:" + "b" * 64


@pytest.mark.parametrize("scheme", ["oci", "oci-archive", "docker-archive"])
def test_path_schemes(scheme: str, tmp_path: Path) -> None:
    assert parse_source(f"{scheme}:{tmp_path}") == SourceSpec(scheme, tmp_path, None)
    assert parse_source(f"{scheme}:{tmp_path}:app:v1") == SourceSpec(scheme, tmp_path, "app:v1")


def test_ref_with_colons_after_a_missing_path_splits_at_first_colon() -> None:
    spec = parse_source("oci:out/img:localhost:5000/app:v1")
    assert spec == SourceSpec("oci", Path("out/img"), "localhost:5000/app:v1")


def test_path_with_colons_is_kept_whole_when_it_exists(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_source(f"oci:{odd}") == SourceSpec("oci", odd, None)
    assert parse_source(f"oci:{odd}:v1") == SourceSpec("oci", odd, "v1")
    assert parse_source(f"oci:{odd}:reg:5000/app:v1") == SourceSpec("oci", odd, "reg:5000/app:v1")


@pytest.mark.parametrize(
    "name", ["ghcr.io/me/app:1", "alpine", "localhost:5000/app@sha256:" + "c" * 64, "[::1]:5000/a:b"]
)
def test_registry_scheme(name: str) -> None:
    assert parse_source(f"docker://{name}") == SourceSpec("docker", None, name)


def test_docker_archive_position_ref(tmp_path: Path) -> None:
    assert parse_source(f"docker-archive:{tmp_path}:@1").ref == "@1"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("docker://", "invalid image reference"),
        ("docker://Upper/app", "lowercase"),
        ("docker://ghcr.io/app:bad tag", "is not an image source"),
        ("dir:/tmp/x", "dir transport is not supported"),
        ("containers-storage:app", "not supported"),
        ("oci:", "needs a path"),
        ("docker-archive:", "needs a path"),
        ("Not A Ref", "docker-daemon:REF"),
        ("docker-daemon:", "invalid image reference"),
        ("docker-daemon:UPPER", "lowercase"),
        ("docker-archive:x.tar:Bad Tag", "is not an image source"),
    ],
)
def test_invalid_sources_are_usage_errors(text: str, hint: str) -> None:
    with pytest.raises(UsageError, match=hint):
        parse_source(text)


def test_open_source_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such directory"):
        open_source(f"oci:{tmp_path / 'missing'}")


def test_open_source_missing_archive_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.tar"):
        open_source(f"docker-archive:{tmp_path / 'missing.tar'}")


@pytest.mark.parametrize(
    "name", ["myapp:dev", "docker.io/library/app:v1", "ghcr.io/me/app@sha256:" + "d" * 64]
)
def test_containerd_scheme_names_an_image(name: str) -> None:
    assert parse_source(f"containerd:{name}") == SourceSpec("containerd", None, name)


@pytest.mark.parametrize("text", ["containerd:", "containerd:Not Valid", "containerd:app:"])
def test_containerd_scheme_needs_a_valid_name(text: str) -> None:
    with pytest.raises(UsageError, match="invalid image reference"):
        parse_source(text)
