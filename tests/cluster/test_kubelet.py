"""``nodeload push --all-nodes`` from a real cluster's kubeconfig, over SSH, and kubelet's own word
that pods start from what was pushed.

The nodes come from the real API server (its Node objects: addresses, labels, runtime), the
image goes over SSH to each node's containerd, and a Pod with ``imagePullPolicy: Never`` on each
node must complete from it: kubelet's container status names the image ID, which must be the
config digest of the image built here. Bytes are checked against each node's NIC as elsewhere.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import docker
import pytest

from nodeload.sandbox import LayerSpec, build_image
from nodeload.sandbox.k8s import Cluster
from tests.cluster.kube import WIRE_FIXED, label_node, push, push_fails, run_everywhere

pytestmark = pytest.mark.e2e

APP = "nodeload-cluster/app:live"  # one tag, moved from v1 to v2
MiB = 1024 * 1024
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def _build(engine: docker.DockerClient, version: str) -> str:
    """APP as ``version``: two shared layers and a top layer of its own; its config digest."""
    base = [LayerSpec(8 * MiB, "cluster-base"), LayerSpec(4 * MiB, "cluster-mid")]
    return build_image(
        engine, APP, f"hello from {version}", [*base, LayerSpec(2 * MiB, f"cluster-top-{version}")]
    )


def test_pods_start_from_the_pushed_image_and_from_the_moved_tag(
    cluster: Cluster, engine: docker.DockerClient
) -> None:
    v1 = _build(engine, "v1")
    nodes = {name: cluster.node(name) for name in cluster.node_names}
    before = {name: node.rx_bytes() for name, node in nodes.items()}
    cold = push(cluster, APP, "--all-nodes", "--export", "save")
    assert sorted(cold) == cluster.node_names  # every node the API server lists
    for name, result in cold.items():
        assert result["status"] == "ok" and result["cri_indexed"], result
        assert result["reach"].startswith("ssh"), result
        received = nodes[name].rx_bytes() - before[name]
        assert result["bytes_sent"] > 14 * MiB
        assert result["bytes_sent"] <= received <= 1.05 * result["bytes_sent"] + WIRE_FIXED

    runs = run_everywhere(cluster, APP, cluster.node_names)
    for name, run in runs.items():
        assert (run.phase, run.exit_code, run.log) == ("Succeeded", 0, "hello from v1"), run
        assert run.image_id == v1, f"kubelet on {name} ran {run.image_id}, not the pushed {v1}"

    v2 = _build(engine, "v2")
    assert v2 != v1
    before = {name: node.rx_bytes() for name, node in nodes.items()}
    warm = push(cluster, APP, "--all-nodes", "--export", "save")
    for name, result in warm.items():
        assert result["status"] == "ok" and result["blobs_skipped"] >= 2, result
        # The changed 2 MiB layer (compressed) with its config and manifest; nothing else.
        assert result["bytes_sent"] < 2.2 * MiB, result
        received = nodes[name].rx_bytes() - before[name]
        assert result["bytes_sent"] <= received <= 1.05 * result["bytes_sent"] + WIRE_FIXED

    runs = run_everywhere(cluster, APP, cluster.node_names)
    for name, run in runs.items():
        assert (run.phase, run.log) == ("Succeeded", "hello from v2"), run
        assert run.image_id == v2, f"kubelet on {name} ran {run.image_id} after the tag moved to {v2}"


def test_the_api_server_chooses_the_nodes(cluster: Cluster, tiny: str) -> None:
    """Selectors are evaluated by the server (its audit log shows them), and a node labelled as a
    control plane is left out on request."""
    label_node(cluster, "node-1", {CONTROL_PLANE: ""})
    try:
        assert list(push(cluster, tiny, "--all-nodes", "--exclude-control-plane")) == ["node-2"]
        assert list(push(cluster, tiny, "-l", CONTROL_PLANE)) == ["node-1"]
        assert list(push(cluster, tiny, "-l", "kubernetes.io/hostname in (node-2)")) == ["node-2"]
        named = push_fails(cluster, tiny, "--node", "node-2", "--node", "node-1", "--exclude-control-plane")
        assert "node-1: control-plane node(s), excluded as asked" in named, named
    finally:
        label_node(cluster, "node-1", {CONTROL_PLANE: None})
    selectors = [
        parse_qs(urlsplit(event["requestURI"]).query).get("labelSelector", [""])[0]
        for event in cluster.audit_events()
        if event["objectRef"]["resource"] == "nodes" and event["verb"] == "list"
    ]
    assert CONTROL_PLANE in selectors and "kubernetes.io/hostname in (node-2)" in selectors


@pytest.mark.parametrize("address_type", ["InternalIP", "Hostname", "name"])
def test_every_address_type_kubelet_reports_reaches_the_node(
    cluster: Cluster, tiny: str, address_type: str
) -> None:
    """InternalIP is the node's address on the cluster network; Hostname and the node name are
    what kubelet registered, reached through the ssh_config's alias for them."""
    results = push(cluster, tiny, "--all-nodes", "--address-type", address_type)
    assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(cluster.node_names, "ok")
    assert all(r["reach"].startswith("ssh") for r in results.values())


def test_a_missing_address_type_fails_each_node_alone(cluster: Cluster, tiny: str) -> None:
    results = push(cluster, tiny, "--all-nodes", "--address-type", "ExternalIP", "--reach", "ssh", ok=False)
    for name in cluster.node_names:
        assert results[name]["status"] == "failed"
        assert f"node {name} reports no ExternalIP address" in results[name]["error"]


def test_a_user_without_rights_is_told_what_is_missing(cluster: Cluster, tiny: str) -> None:
    """The token user the cluster makes holds no role at all: the API server answers 403."""
    message = push_fails(cluster, tiny, "--all-nodes", kubeconfig=cluster.user_kubeconfig("developer"))
    assert "user 'developer'" in message and "may not list nodes" in message, message
