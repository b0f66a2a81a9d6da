"""``--all-nodes`` from an Ansible inventory and from a kubeconfig, several images in one run,
and one node failing alone, on real sandbox nodes (the Kubernetes API is the stand-in of
``tests/fakes``; everything behind it is real sshd + containerd).

Each node's ``bytes_sent`` is checked against what arrived in its content store.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.sandbox import K3S_CONTAINERD_SOCKET, LayerSpec, NodeVariant, Sandbox, build_image
from tests.e2e.pushing import content_sizes, nodeload, run_image
from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
OTHER = "nodeload-e2e/other:v1"


@pytest.fixture()
def cluster(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """Three fresh nodes; node-3 has its containerd where k3s puts it."""
    variants = [NodeVariant(), NodeVariant(), NodeVariant(containerd_socket=K3S_CONTAINERD_SOCKET)]
    with Sandbox(variants, image=node_image, client=docker_client) as sb:
        yield sb


@pytest.fixture(scope="module")
def other_image(docker_client: docker.DockerClient) -> str:
    """A second app sharing only busybox with the e2e app."""
    build_image(docker_client, OTHER, "the other one", [LayerSpec(2 * MiB, "e2e-other")])
    return OTHER


def _push(sandbox: Sandbox, *args: str, ok: bool = True) -> list[dict[str, Any]]:
    proc = nodeload("push", *args, "-F", str(sandbox.ssh_config_path), "--json", check=ok)
    report = json.loads(proc.stdout)
    assert report["error"] is None, report
    results: list[dict[str, Any]] = report["nodes"]
    return results


def test_all_nodes_from_an_inventory_each_sent_what_it_lacked(
    cluster: Sandbox, app_images: dict[str, str], other_image: str, tmp_path: Path
) -> None:
    # node-2 already runs v1: it lacks only v2's top layer, config and manifest.
    [seeded] = _push(cluster, app_images["v1"], "--node", "node-2")
    assert seeded["status"] == "ok"
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"[workers]\nnode-1\nnode-2\n\n[edge]\nnode-3 nodeload_containerd_socket={K3S_CONTAINERD_SOCKET}\n"
    )
    before = {alias: content_sizes(cluster.node(alias)) for alias in cluster.aliases}

    results = _push(cluster, app_images["v2"], other_image, "--inventory", str(inventory), "--all-nodes")

    assert [(r["image"], r["node"]) for r in results] == [
        (image, alias) for image in (app_images["v2"], other_image) for alias in cluster.aliases
    ]
    assert all(r["status"] == "ok" for r in results), results
    for alias in cluster.aliases:
        after = content_sizes(cluster.node(alias))
        arrived = sum(size for digest, size in after.items() if digest not in before[alias])
        mine = [r for r in results if r["node"] == alias]
        assert sum(r["bytes_sent"] for r in mine) == arrived, alias
        # The second image shares busybox with the first: sent once per node, in the same run.
        assert mine[1]["bytes_skipped"] > 0
    by_node = {r["node"]: r for r in results if r["image"] == app_images["v2"]}
    assert by_node["node-2"]["bytes_sent"] < by_node["node-1"]["bytes_sent"] / 3
    assert by_node["node-1"]["bytes_sent"] == by_node["node-3"]["bytes_sent"]
    assert by_node["node-3"]["socket"] == K3S_CONTAINERD_SOCKET
    for alias in cluster.aliases:
        container = f"t-{secrets.token_hex(4)}"
        assert run_image(cluster.node(alias), "docker.io/nodeload-e2e/app:v2", container) == "hello from v2"


def test_all_nodes_from_a_kubeconfig(cluster: Sandbox, app_images: dict[str, str], tmp_path: Path) -> None:
    kube_nodes = [
        node("node-1"),
        node("node-2"),
        node("node-3", runtime="containerd://1.7.11-k3s2"),  # k3s: its socket is tried first
        node("node-4", runtime="docker://24.0.7"),  # not containerd: fails alone, never contacted
        node("cp-1", labels={"node-role.kubernetes.io/control-plane": ""}),
    ]
    with FakeKubeApi(kube_nodes) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [api.token_context("sandbox", user="dev")])
        args = ("--kubeconfig", str(kubeconfig), "--address-type", "name")
        everything = _push(
            cluster, app_images["v1"], *args, "--all-nodes", "--exclude-control-plane", ok=False
        )
        some = _push(cluster, app_images["v2"], *args, "-l", "kubernetes.io/hostname in (node-1,node-3)")
        selectors = [r.query.get("labelSelector") for r in api.requests if r.path == "/api/v1/nodes"]
    status = {r["node"]: r["status"] for r in everything}
    assert status == {"node-1": "ok", "node-2": "ok", "node-3": "ok", "node-4": "failed"}
    failed = next(r for r in everything if r["node"] == "node-4")
    assert "docker://24.0.7" in failed["error"] and "containerd" in failed["error"]
    assert next(r for r in everything if r["node"] == "node-3")["socket"] == K3S_CONTAINERD_SOCKET
    assert [r["node"] for r in some] == ["node-1", "node-3"] and all(r["status"] == "ok" for r in some)
    assert "kubernetes.io/hostname in (node-1,node-3)" in selectors  # evaluated by the API server


def test_a_node_stopped_mid_push_fails_alone(
    cluster: Sandbox, docker_client: docker.DockerClient, app_images: dict[str, str]
) -> None:
    big = "nodeload-e2e/fanout-big:v1"
    build_image(docker_client, big, "big one", [LayerSpec(48 * MiB, "e2e-fanout-big")])
    cluster.node("node-2").shape(80)  # slow enough to be caught mid-layer
    argv = [sys.executable, "-m", "nodeload", "push", big, "--json", "-F", str(cluster.ssh_config_path)]
    for alias in cluster.aliases:
        argv += ["--node", alias]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ingest = "/var/lib/containerd/io.containerd.content.v1.content/ingest"
    deadline = time.monotonic() + 120
    while not cluster.node("node-2").check_output(["sh", "-c", f"ls {ingest} 2>/dev/null || true"]).strip():
        assert proc.poll() is None and time.monotonic() < deadline, "node-2 never started receiving"
        time.sleep(0.1)
    cluster.node("node-2").get_wrapped_container().kill()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    status = {r["node"]: (r["status"], r["error"]) for r in json.loads(out)["nodes"]}
    assert status["node-1"] == ("ok", None) and status["node-3"] == ("ok", None)
    assert status["node-2"][0] == "failed" and status["node-2"][1]
    for alias in ("node-1", "node-3"):
        container = f"t-{secrets.token_hex(4)}"
        assert run_image(cluster.node(alias), "docker.io/nodeload-e2e/fanout-big:v1", container) == "big one"


def test_two_images_to_eight_nodes_in_one_run(
    docker_client: docker.DockerClient, node_image: str, app_images: dict[str, str]
) -> None:
    """Load (#10): 2 images x 8 nodes in one run; every result ok, and every node received each
    image's bytes once (v2 shares all but its top layer with v1)."""
    v1, v2 = app_images["v1"], app_images["v2"]
    with Sandbox(8, image=node_image, client=docker_client) as sb:
        before = {alias: sb.node(alias).rx_bytes() for alias in sb.aliases}
        args = ["push", v1, v2, "--export", "save", "--json", "-F", str(sb.ssh_config_path)]
        for alias in sb.aliases:
            args += ["--node", alias]
        results = json.loads(nodeload(*args).stdout)["nodes"]
        assert len(results) == 16 and all(r["status"] == "ok" for r in results), results
        for alias in sb.aliases:
            first, second = ({r["image"]: r for r in results if r["node"] == alias}[i] for i in (v1, v2))
            assert second["bytes_sent"] < first["bytes_sent"] / 3  # v2's own top layer, config, manifest
            received = sb.node(alias).rx_bytes() - before[alias]
            assert received <= 1.05 * (first["bytes_sent"] + second["bytes_sent"]) + 256 * 1024
