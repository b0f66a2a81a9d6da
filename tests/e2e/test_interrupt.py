"""Ctrl-C during a push from the Docker engine, under the default export (its own docker push into
nodeload's endpoint) and with docker save, over a shaped link: the command ends within a second
with one clean line, and the rerun resumes inside the interrupted blob."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest

from nodeload.sandbox import LayerSpec, Sandbox, build_image
from tests.e2e.pushing import content_sizes, image_names, nodeload

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
INTERRUPTED = "nodeload: interrupted; rerun the same command to resume"


def _push_args(sandbox: Sandbox, image: str) -> list[str]:
    return ["push", image, "-F", str(sandbox.ssh_config_path), "--node", "node-1"]


@pytest.fixture()
def shaped_node(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """A fresh node behind a 100 Mbit/s link (tc tbf), so that a push is caught mid-layer."""
    with Sandbox(1, image=node_image, client=docker_client) as sb:
        sb.node("node-1").shape(100)
        try:
            yield sb
        finally:
            sb.node("node-1").unshape()


def _ingested(sandbox: Sandbox) -> int:
    out = sandbox.node("node-1").check_output(
        [
            "sh",
            "-c",
            "find /var/lib/containerd/io.containerd.content.v1.content/ingest -name data -printf '%s\\n'",
        ]
    )
    return sum(int(x) for x in out.split())


@pytest.mark.parametrize("export", ["auto", "save"])  # auto: the engine's own docker push
def test_ctrl_c_during_a_push_from_the_engine_exits_at_once_and_the_rerun_resumes(
    shaped_node: Sandbox, docker_client: docker.DockerClient, export: str
) -> None:
    image = "nodeload-e2e/interrupted:v1"
    build_image(
        docker_client,
        image,
        "interrupted",
        [LayerSpec(40 * MiB, "e2e-int-1"), LayerSpec(40 * MiB, "e2e-int-2")],
    )
    node = shaped_node.node("node-1")
    args = [*_push_args(shaped_node, image), "--json", "--export", export]
    argv = [sys.executable, "-m", "nodeload", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _ingested(shaped_node) < 4 * MiB:
            assert proc.poll() is None, "the push ended before it could be interrupted"
            assert time.monotonic() < deadline, "no layer started arriving"
            time.sleep(0.1)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert took < 1.0, f"exited {took:.2f} s after SIGINT"
    assert err == INTERRUPTED + "\n", err  # one line, ending in a newline, no traceback
    assert "docker.io/nodeload-e2e/interrupted:v1" not in image_names(node)
    committed = sum(content_sizes(node).values())
    partial = _ingested(shaped_node)
    assert partial > 0
    # The engine's temporary tag for its push is gone with the run.
    assert not [
        t for i in docker_client.images.list() for t in i.tags if t.endswith("/nodeload-e2e/interrupted:v1")
    ]

    node.unshape()
    rerun = nodeload(*args)
    [result] = json.loads(rerun.stdout)["nodes"]
    total = sum(content_sizes(node).values())
    assert result["status"] == "ok"
    assert result["bytes_resumed"] == partial  # inside the interrupted blob
    assert result["bytes_sent"] == total - committed - partial
