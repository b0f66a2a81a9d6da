"""``--store docker``: a remote Docker Engine (a sandbox node running dockerd) gets only the layers
it lacks, through its own API over the SSH tunnel, and runs the image."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.sandbox import NodeVariant, Sandbox, ensure_dockerd_node_image
from tests.e2e.pushing import nodeload
from tests.helpers.oci import write_layout

pytestmark = pytest.mark.e2e

WIRE_FIXED = 256 * 1024


@pytest.fixture(scope="module")
def docker_host(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """One node that runs its own Docker Engine (and sshd)."""
    image = ensure_dockerd_node_image(docker_client)
    with Sandbox([NodeVariant(dockerd=True)], image=image, client=docker_client) as sb:
        yield sb


def _push(sandbox: Sandbox, image: str, *args: str) -> dict[str, Any]:
    config = str(sandbox.ssh_config_path)
    proc = nodeload("push", image, "--store", "docker", "--node", "node-1", "-F", config, "--json", *args)
    (result,) = json.loads(proc.stdout)["nodes"]
    return dict(result)


def test_only_missing_layers_travel_and_the_image_runs(
    docker_host: Sandbox, app_images: dict[str, str]
) -> None:
    node = docker_host.node("node-1")
    cold = _push(docker_host, app_images["v1"])
    assert cold["status"] == "ok" and cold["blobs_sent"] == cold["blobs_total"], cold
    run = ["docker", "run", "--rm", "--network", "none"]
    assert node.check_output([*run, app_images["v1"]]).strip() == "hello from v1"

    rx = node.rx_bytes()
    warm = _push(docker_host, app_images["v2"])
    wire = node.rx_bytes() - rx
    assert warm["status"] == "ok"
    assert warm["blobs_sent"] == 2  # the changed layer and the config: docker load reads no other layer
    assert 3 * 1024 * 1024 < warm["bytes_sent"] < cold["bytes_sent"] / 3
    assert wire <= warm["bytes_sent"] * 1.05 + WIRE_FIXED
    assert node.check_output([*run, app_images["v2"]]).strip() == "hello from v2"

    rx = node.rx_bytes()
    repeat = _push(docker_host, app_images["v2"])
    assert (repeat["bytes_sent"], repeat["blobs_sent"]) == (0, 0)
    assert node.rx_bytes() - rx < WIRE_FIXED


def test_an_oci_layout_loads_into_docker(docker_host: Sandbox, tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", seed=91, ref="v1")
    result = _push(docker_host, f"oci:{info.path}:v1", "--name", "example.com/from-oci:v1")
    assert result["status"] == "ok", result
    images = docker_host.node("node-1").check_output(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]
    )
    assert f"example.com/from-oci:v1 {info.images[0].config.digest.removeprefix('sha256:')[:12]}" in images
