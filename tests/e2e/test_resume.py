"""A push killed in the middle of a layer leaves no image behind, and a rerun sends only the rest."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest

from nodeload.sandbox import LayerSpec, Sandbox, build_image
from tests.e2e.pushing import content_sizes, image_names, push_json, run_image

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
BIG = "nodeload-e2e/big:v1"
BIG_LAYER = 64 * MiB


@pytest.fixture()
def slow_node(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """A fresh node behind a 40 Mbit/s link, so a push can be caught mid-layer."""
    with Sandbox(1, image=node_image, client=docker_client) as sb:
        sb.node("node-1").shape(40)
        try:
            yield sb
        finally:
            sb.node("node-1").unshape()


def _active_ingest_offset(sandbox: Sandbox) -> int:
    """Bytes received so far by the node for its unfinished ingests (from the node's files)."""
    out = sandbox.node("node-1").check_output(
        [
            "sh",
            "-c",
            "find /var/lib/containerd/io.containerd.content.v1.content/ingest -name data -printf '%s\\n'",
        ]
    )
    return sum(int(x) for x in out.split())


def test_killed_push_resumes(slow_node: Sandbox, docker_client: docker.DockerClient) -> None:
    build_image(docker_client, BIG, "big one", [LayerSpec(BIG_LAYER, "e2e-big")])
    node = slow_node.node("node-1")
    argv = [
        sys.executable,
        "-m",
        "nodeload",
        "push",
        BIG,
        "--export",
        "save",  # resuming inside a blob is the save path's (docker push restarts an upload)
        "--json",
        "-F",
        str(slow_node.ssh_config_path),
        "--node",
        "node-1",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _active_ingest_offset(slow_node) < 8 * MiB:
            assert proc.poll() is None, "push finished before it could be interrupted"
            assert time.monotonic() < deadline, "the big layer never started arriving"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # Nothing half-written is visible: no image record, the partial layer is only an ingest.
    assert "docker.io/nodeload-e2e/big:v1" not in image_names(node)
    committed_before = sum(content_sizes(node).values())
    partial = _active_ingest_offset(slow_node)
    assert 0 < partial < BIG_LAYER

    node.unshape()
    [rerun] = push_json(slow_node, BIG, extra=("--export", "save"))
    total = sum(content_sizes(node).values())
    assert rerun["bytes_resumed"] == partial
    assert rerun["bytes_sent"] == total - committed_before - partial
    assert rerun["bytes_sent"] < BIG_LAYER
    assert _active_ingest_offset(slow_node) == 0
    assert run_image(node, "docker.io/nodeload-e2e/big:v1", f"t-{secrets.token_hex(4)}") == "big one"

    [again] = push_json(slow_node, BIG, extra=("--export", "save"))
    assert again["bytes_sent"] == 0
