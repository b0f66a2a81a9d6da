"""``push --restart`` on a real cluster: the pods that run the old image of a moved tag are
replaced by their own controllers, and kubelet's word is that the new pods run the new image.

A Deployment (2 replicas) and a DaemonSet run ``app:dev`` from nodeload's push, with a bare pod
beside them. A changed ``app:dev`` is pushed with ``--restart``: the workloads roll out (their
pods' imageID is the new config digest), the bare pod is reported and left alone. A user who
may push but not patch workloads gets a clear message, and the push itself still stands.
"""

from __future__ import annotations

import json
import time
from typing import Any

import docker
import pytest
from kubernetes import client

from nodeload.sandbox import build_image
from nodeload.sandbox.k8s import Cluster
from tests.cluster.kube import READ_NODES, SLEEP, core, delete_pod, grant, pod, push, wait_running
from tests.e2e.pushing import nodeload

pytestmark = pytest.mark.e2e

APP = "nodeload-cluster/restart:dev"
LABELS = {"app": "restart-test"}


def _template(image: str) -> dict[str, Any]:
    container = {"name": "app", "image": image, "imagePullPolicy": "Never", "command": SLEEP}
    spec = {
        "containers": [container],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
    }
    return {"metadata": {"labels": LABELS}, "spec": spec}


def _workloads(apps: client.AppsV1Api) -> None:
    selector = {"matchLabels": LABELS}
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": selector, "template": _template(APP)},
    }
    daemonset = {"metadata": {"name": "agent"}, "spec": {"selector": selector, "template": _template(APP)}}
    apps.create_namespaced_deployment("default", deployment)
    apps.create_namespaced_daemon_set("default", daemonset)


def _running_images(cluster: Cluster, owner_kinds: set[str], timeout: float = 120) -> dict[str, str]:
    """Pod name -> imageID of the running, ready pods of the test's workloads (owner kinds:
    ReplicaSet, DaemonSet), once no pod of theirs is terminating or starting."""
    api = core(cluster)
    deadline = time.monotonic() + timeout
    while True:
        pods = api.list_namespaced_pod("default", label_selector="app=restart-test").items
        ours = [p for p in pods if {o.kind for o in p.metadata.owner_references or ()} & owner_kinds]
        settled = all(
            p.status.phase == "Running"
            and p.metadata.deletion_timestamp is None
            and all(s.ready for s in p.status.container_statuses or ())
            for p in ours
        )
        if ours and settled and len(ours) == 4:  # 2 replicas + one per node (2 nodes)
            return {p.metadata.name: p.status.container_statuses[0].image_id for p in ours}
        assert time.monotonic() < deadline, [(p.metadata.name, p.status.phase) for p in ours]
        time.sleep(0.5)


def test_push_restart_rolls_out_the_new_image_and_leaves_bare_pods(
    cluster: Cluster, engine: docker.DockerClient
) -> None:
    apps = client.AppsV1Api(cluster.api())
    api = core(cluster)
    v1 = build_image(engine, APP, "restart v1")
    assert all(r["status"] == "ok" for r in push(cluster, APP, "--all-nodes", "--export", "save").values())
    _workloads(apps)
    api.create_namespaced_pod("default", pod("bare", "node-1", APP, command=SLEEP, labels={"app": "bare"}))
    try:
        wait_running(api, "default", ["bare"])
        before = _running_images(cluster, {"ReplicaSet", "DaemonSet"})
        assert set(before.values()) == {v1}, before

        v2 = build_image(engine, APP, "restart v2")  # a new config: another image ID, same layers
        assert v2 != v1
        argv = ["push", APP, "--all-nodes", "--export", "save", "--restart", "--json"]
        argv += ["--kubeconfig", str(cluster.kubeconfig), "-F", str(cluster.ssh_config_path)]
        proc = nodeload(*argv)
        report = json.loads(proc.stdout)
        assert all(n["status"] == "ok" and n["image_id"] == v2 for n in report["nodes"]), report
        restart = report["restart"]
        restarted = {(r["kind"], r["name"]): r for r in restart["restarted"]}
        assert set(restarted) == {("Deployment", "web"), ("DaemonSet", "agent")}, restart
        assert all(r["rolled_out"] and r["error"] is None for r in restarted.values()), restart
        assert [(u["name"], u["owner"]) for u in restart["untouched"]] == [("bare", "")], restart
        assert "bare pod" in restart["untouched"][0]["why"]
        assert restart["error"] is None
        assert "rolled out" in proc.stderr and "not restarting pod default/bare" in proc.stderr

        after = _running_images(cluster, {"ReplicaSet", "DaemonSet"})
        assert set(after.values()) == {v2}, after  # kubelet's word: the new pods run the new image
        assert not set(after) & set(before)  # new pods, not the old ones
        bare = api.read_namespaced_pod("bare", "default")
        assert bare.status.container_statuses[0].image_id == v1  # left alone: still the old image

        # Nothing older left: a second --restart has nothing to do, and touches nothing.
        again = json.loads(nodeload(*argv).stdout)["restart"]
        assert again["restarted"] == [] and [u["name"] for u in again["untouched"]] == ["bare"]
    finally:
        apps.delete_namespaced_deployment("web", "default")
        apps.delete_namespaced_daemon_set("agent", "default")
        delete_pod(api, "bare", "default")


def test_a_user_who_may_not_patch_workloads_is_told_and_the_push_stands(
    cluster: Cluster, engine: docker.DockerClient
) -> None:
    apps = client.AppsV1Api(cluster.api())
    build_image(engine, APP, "restart v1")
    push(cluster, APP, "--all-nodes", "--export", "save")
    _workloads(apps)
    rbac = client.RbacAuthorizationV1Api(cluster.api())
    reads = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "daemonsets"], "verbs": ["get"]},
    ]
    try:
        _running_images(cluster, {"ReplicaSet", "DaemonSet"})
        grant(cluster, "nodeload-test-restarter-nodes", "restarter", READ_NODES)
        grant(cluster, "nodeload-test-restarter-reads", "restarter", reads)
        v3 = build_image(engine, APP, "restart v3")
        kubeconfig = cluster.add_user("restarter")
        argv = ["push", APP, "--all-nodes", "--export", "save", "--restart", "--json"]
        argv += ["--kubeconfig", str(kubeconfig), "-F", str(cluster.ssh_config_path)]
        proc = nodeload(*argv, check=False)
        assert proc.returncode == 1, proc.stderr  # the restart asked for did not happen
        report = json.loads(proc.stdout)
        assert all(n["status"] == "ok" and n["image_id"] == v3 for n in report["nodes"]), report
        error = report["restart"]["error"]
        assert "forbidden" in error and "patch on deployments" in error, error
        assert "nodeload: error: restarting" in proc.stderr
        # The push stands: every node holds the new image under the tag.
        for node in report["nodes"]:
            listed = cluster.node(node["node"]).check_output(["ctr", "-n", "k8s.io", "images", "ls"])
            (line,) = [entry for entry in listed.splitlines() if entry.startswith(f"docker.io/{APP} ")]
            assert node["digest"] in line, line
    finally:
        for name in ("nodeload-test-restarter-nodes", "nodeload-test-restarter-reads"):
            rbac.delete_cluster_role_binding(name)
            rbac.delete_cluster_role(name)
        apps.delete_namespaced_deployment("web", "default")
        apps.delete_namespaced_daemon_set("agent", "default")
