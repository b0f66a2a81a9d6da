"""``nodeload images`` and ``nodeload rm`` on the nodes of a real Kubernetes: the nodes come from
the API server, CRI's own view decides what kubelet sees, and kubelet's running containers (CRI's
container list) keep their image from ``rm``."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import docker
import pytest
from kubernetes import client

from nodeload.sandbox import build_image
from nodeload.sandbox.k8s import Cluster
from tests.cluster.kube import SLEEP, core, delete_pod, pod, push, wait_running
from tests.e2e.pushing import image_names, nodeload

pytestmark = pytest.mark.e2e


def _run(cluster: Cluster, verb: str, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [verb, *args, "--all-nodes", "--kubeconfig", str(cluster.kubeconfig)]
    proc = nodeload(*argv, "-F", str(cluster.ssh_config_path), "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _never_pull_reason(api: client.CoreV1Api, node: str, image: str, timeout: float = 60) -> str:
    """Why kubelet keeps a pod of ``image`` (imagePullPolicy: Never) on ``node`` waiting."""
    name = f"never-{secrets.token_hex(3)}"
    api.create_namespaced_pod("default", pod(name, node, image, command=SLEEP))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = api.read_namespaced_pod(name, "default").status.container_statuses or []
            waiting = statuses[0].state.waiting if statuses else None
            if waiting is not None and waiting.reason not in (None, "ContainerCreating"):
                return str(waiting.reason)
            assert not (statuses and statuses[0].state.running), "the pod started from a removed image"
            time.sleep(0.5)
        raise AssertionError(f"kubelet said nothing of {name} within {timeout} s")
    finally:
        delete_pod(api, name, "default")


def test_images_and_rm_against_kubelets_view(cluster: Cluster, engine: docker.DockerClient) -> None:
    tag = f"nodeload-cluster/inuse:{secrets.token_hex(3)}"
    name = f"docker.io/{tag}"
    image_id = build_image(engine, tag, "hello from inuse")
    pushed = push(cluster, tag, "--all-nodes", "--export", "save")
    assert all(r["status"] == "ok" for r in pushed.values()), pushed

    status, report = _run(cluster, "images", tag)
    assert status == 0
    [view] = report["images"]
    assert (view["name"], view["image_id"], view["differing_nodes"]) == (name, image_id, [])
    assert sorted(h["node"] for h in view["nodes"]) == cluster.node_names
    for holder in view["nodes"]:
        assert holder["held"] and holder["image_id"] == image_id, holder
        assert holder["cri"] is True and holder["unpacked"] is True, holder  # kubelet can start it

    api = core(cluster)
    runner = f"inuse-{secrets.token_hex(3)}"
    api.create_namespaced_pod("default", pod(runner, "node-1", name, command=SLEEP))
    try:
        wait_running(api, "default", [runner])
        status, removed = _run(cluster, "rm", tag)
        assert status == 1
        by_node = {r["node"]: r for r in removed["nodes"]}
        [kept] = by_node["node-1"]["images"]
        assert (by_node["node-1"]["status"], kept["status"]) == ("refused", "refused")
        [user] = kept["used_by"]
        assert (user["kind"], user["name"], user["state"], user["pod"]) == (
            "cri",
            "app",
            "running",
            f"default/{runner}",
        )
        assert name in image_names(cluster.node("node-1"))
        # node-2 runs nothing of it: removed there, CRI's records with it.
        assert by_node["node-2"]["images"][0]["status"] == "removed"
        assert by_node["node-2"]["freed_bytes"] > 0
        assert name not in image_names(cluster.node("node-2"))
        assert image_id not in image_names(cluster.node("node-2"))  # CRI's sha256:<ID> record
        # kubelet's own word that CRI no longer has it there: a pod that may not pull cannot start.
        assert _never_pull_reason(api, "node-2", name) == "ErrImageNeverPull"
        _, after = _run(cluster, "images", tag)
        holders = {h["node"]: h for h in after["images"][0]["nodes"]}
        assert holders["node-1"]["cri"] is True and holders["node-2"]["held"] is False
    finally:
        delete_pod(api, runner, "default")
    # Once kubelet has stopped the pod's container, node-1 lets the image go too.
    deadline = time.monotonic() + 60
    while _run(cluster, "rm", tag, "--dry-run")[0] != 0:
        assert time.monotonic() < deadline, "kubelet never stopped the deleted pod's container"
        time.sleep(1)
    status, removed = _run(cluster, "rm", tag)
    assert status == 0, removed
    by_node = {r["node"]: r for r in removed["nodes"]}
    assert [i["status"] for i in by_node["node-1"]["images"]] == ["removed"]
    assert [i["status"] for i in by_node["node-2"]["images"]] == ["absent"]
    assert name not in image_names(cluster.node("node-1"))
    assert image_id not in image_names(cluster.node("node-1"))
