"""nodeload push against real node containers (OpenSSH + containerd + CRI), through the real CLI.

Byte counts are checked three ways: nodeload's report, the node's own content
store (what actually arrived), and the node's network interface counter.
"""

from __future__ import annotations

import json
import secrets

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import CONTENT_ROOT, content_sizes, image_names, push_json, run_image

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
# Overhead allowed on the wire on top of blob bytes: SSH + gRPC + TCP/IP framing.
WIRE_OVERHEAD = 0.05
WIRE_FIXED = 256 * 1024


def test_cold_changed_and_repeat_push(node_sandbox: Sandbox, app_images: dict[str, str]) -> None:
    node = node_sandbox.node("node-1")

    rx = node.rx_bytes()
    [cold] = push_json(node_sandbox, app_images["v1"])
    cold_wire = node.rx_bytes() - rx
    after_cold = content_sizes(node)
    # Every blob that arrived was sent, and nothing else was.
    assert cold["bytes_sent"] == sum(after_cold.values())
    assert cold["blobs_sent"] == len(after_cold) == cold["blobs_total"]
    assert cold["bytes_skipped"] == 0
    assert cold_wire >= cold["bytes_sent"]
    assert cold_wire <= cold["bytes_sent"] * (1 + WIRE_OVERHEAD) + WIRE_FIXED
    # What nodeload says went over its TCP connection is what the node's interface saw,
    # less the TCP/IP headers (and the node's rx counter also counts our ACKs for its replies).
    assert cold["bytes_sent"] < cold["wire_bytes_sent"] <= cold_wire
    assert cold_wire <= cold["wire_bytes_sent"] * 1.05 + 64 * 1024
    assert cold["cri_indexed"] is True
    assert cold["name"] == "docker.io/nodeload-e2e/app:v1"

    rx = node.rx_bytes()
    [repeat] = push_json(node_sandbox, app_images["v1"])
    assert repeat["bytes_sent"] == 0 and repeat["blobs_sent"] == 0
    assert repeat["bytes_skipped"] == cold["bytes_sent"]
    assert repeat["digest"] == cold["digest"]
    assert node.rx_bytes() - rx < WIRE_FIXED

    rx = node.rx_bytes()
    [changed] = push_json(node_sandbox, app_images["v2"])
    changed_wire = node.rx_bytes() - rx
    after_changed = content_sizes(node)
    new_blobs = {d: s for d, s in after_changed.items() if d not in after_cold}
    # Only the changed layer, the new config and the new manifest travel.
    assert changed["blobs_sent"] == len(new_blobs) == 3
    assert changed["bytes_sent"] == sum(new_blobs.values())
    assert max(new_blobs.values()) > 3 * MiB  # the changed (incompressible) layer is among them
    manifest = json.loads(
        node.check_output(["cat", f"{CONTENT_ROOT}/{changed['digest'].removeprefix('sha256:')}"])
    )
    shared = [layer["digest"] for layer in manifest["layers"] if layer["digest"] in after_cold]
    assert len(shared) == 3  # busybox and the two base layers
    assert changed["bytes_skipped"] == sum(after_cold[d] for d in shared)
    assert changed_wire <= changed["bytes_sent"] * (1 + WIRE_OVERHEAD) + WIRE_FIXED
    assert changed["bytes_sent"] < changed["wire_bytes_sent"] <= changed_wire

    names = image_names(node)
    assert "docker.io/nodeload-e2e/app:v1" in names and "docker.io/nodeload-e2e/app:v2" in names
    assert "io.cri-containerd.image=managed" in names["docker.io/nodeload-e2e/app:v2"]
    assert run_image(node, "docker.io/nodeload-e2e/app:v2", f"t-{secrets.token_hex(4)}") == "hello from v2"
    assert run_image(node, "docker.io/nodeload-e2e/app:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"


def test_push_to_two_nodes_reports_each(sandbox: Sandbox, app_images: dict[str, str]) -> None:
    results = push_json(sandbox, app_images["v1"], "node-1", "node-2", extra=("--name", "team/app:two-nodes"))
    assert [r["node"] for r in results] == ["node-1", "node-2"]
    for result, alias in zip(results, ("node-1", "node-2"), strict=True):
        assert result["name"] == "docker.io/team/app:two-nodes"
        assert "docker.io/team/app:two-nodes" in image_names(sandbox.node(alias))


def test_nerdctl_namespace(node_sandbox: Sandbox, app_images: dict[str, str]) -> None:
    node = node_sandbox.node("node-1")
    [result] = push_json(node_sandbox, app_images["v1"], extra=("--namespace", "default"))
    assert result["namespace"] == "default"
    assert result["cri_indexed"] is None  # CRI only watches k8s.io
    assert "docker.io/nodeload-e2e/app:v1" in image_names(node, "default")
    assert "docker.io/nodeload-e2e/app:v1" not in image_names(node, "k8s.io")
    assert (
        run_image(node, "docker.io/nodeload-e2e/app:v1", "t-default", namespace="default") == "hello from v1"
    )
