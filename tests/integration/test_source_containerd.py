"""``nodeload push containerd:REF``: images read straight from a containerd on this machine.

A second real containerd plays the build host (where nerdctl, BuildKit or Docker's containerd
image store leave images); the node is the usual containerd behind the test sshd. Images get
into the build host with ``ctr images import``, as a user's tools would have put them there.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.oci import LayoutInfo, tar_directory
from tests.integration.cli import Cli, blobs_of, content, images, layout
from tests.integration.conftest import _running_containerd
from tests.integration.nodes import Containerd

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(platform.machine() not in ("x86_64", "amd64"), reason="expects an amd64 host"),
]

NAME = "example.com/built/app:v1"


@pytest.fixture()
def build_host() -> Iterator[Containerd]:
    """The containerd images are read from (not the node's)."""
    with _running_containerd() as host:
        yield host


def _import(host: Containerd, info: LayoutInfo, tmp_path: Path, namespace: str, *flags: str) -> None:
    archive = tar_directory(info.path, tmp_path / f"import-{namespace}.tar")
    host.ctr("images", "import", *flags, str(archive), namespace=namespace)


def test_push_from_a_local_containerd_sends_the_stored_blobs_once(
    cli: Cli, build_host: Containerd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    info = layout(tmp_path, 41, platforms=["linux/amd64", "linux/arm64"], ref="v1", name=NAME)
    assert info.index is not None
    _import(build_host, info, tmp_path, "default", "--all-platforms")
    amd64, arm64 = (blobs_of(image) for image in info.images)
    source = ("--source-socket", str(build_host.socket))

    first = cli.push_ok(f"containerd:{NAME}", node, *source)
    # The blobs are the stored ones, byte for byte: same digests as the layout they came from.
    assert content(node) == amd64 | {info.index.digest}
    assert first["bytes_sent"] == sum(len(info.blobs[d]) for d in amd64 | {info.index.digest})
    assert (first["name"], first["digest"], first["platform"]) == (NAME, info.index.digest, "linux/amd64")
    assert first["layers_unpacked"] == 2 and first["cri_indexed"] is True

    again = cli.push_ok(f"containerd:{NAME}", node, *source)
    assert (again["bytes_sent"], again["blobs_sent"]) == (0, 0)

    # The other platform of the same record, named by digest as a pinned deploy would.
    pinned = f"containerd:example.com/built/app@{info.index.digest}"
    arm = cli.push_ok(
        pinned, node, *source, "--platform", "linux/arm64", "--no-unpack", "--name", "x.io/arm:v1"
    )
    assert arm["bytes_sent"] == sum(len(info.blobs[d]) for d in arm64)
    assert content(node) == amd64 | arm64 | {info.index.digest}


def test_socket_and_namespace_come_from_the_environment_as_for_ctr(
    cli: Cli, build_host: Containerd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    # Docker's containerd image store keeps its images in "moby".
    info = layout(tmp_path, 42, ref="v1", name="docker.io/library/envapp:v1")
    _import(build_host, info, tmp_path, "moby")
    env = {"CONTAINERD_ADDRESS": str(build_host.socket), "CONTAINERD_NAMESPACE": "moby"}

    # A short name finds the normalized record, as nerdctl and Docker store it.
    result = cli.push_ok("containerd:envapp:v1", fresh_containerd, env=env)
    assert result["name"] == "docker.io/library/envapp:v1"
    assert content(fresh_containerd) == set(info.blobs)


def test_a_missing_image_names_the_namespace_and_socket(
    cli: Cli, build_host: Containerd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 43, ref="v1", name=NAME)
    _import(build_host, info, tmp_path, "default")

    # The image is there, but in another namespace than the one asked for.
    run = cli.push(
        f"containerd:{NAME}",
        fresh_containerd,
        "--source-socket",
        str(build_host.socket),
        "--source-namespace",
        "k8s.io",
        json=False,
    )
    assert run.code == 1
    assert "namespace 'k8s.io'" in run.err and str(build_host.socket) in run.err
    assert "Traceback" not in run.err
    assert images(fresh_containerd) == set()

    nowhere = tmp_path / "no-containerd.sock"
    run = cli.push(f"containerd:{NAME}", fresh_containerd, "--source-socket", str(nowhere), json=False)
    assert run.code == 1
    assert f"cannot reach the containerd at {nowhere}" in run.err


def test_a_platform_that_was_never_pulled_is_a_clear_error(
    cli: Cli, build_host: Containerd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 44, platforms=["linux/amd64", "linux/arm64"], ref="v1", name=NAME)
    _import(build_host, info, tmp_path, "default")  # without --all-platforms: the host's only
    source = ("--source-socket", str(build_host.socket))

    run = cli.push(f"containerd:{NAME}", fresh_containerd, *source, "--platform", "linux/arm64", json=False)
    assert run.code == 1
    assert "only partly there" in run.err and "Traceback" not in run.err
    assert NAME not in images(fresh_containerd)

    # The platform that is there still goes.
    assert cli.push_ok(f"containerd:{NAME}", fresh_containerd, *source)["platform"] == "linux/amd64"
