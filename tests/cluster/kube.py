"""What the cluster tests ask the real API server and kubelet: pods that run a pushed image with
``imagePullPolicy: Never``, and what kubelet then reports about them."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from nodeload.sandbox.k8s import Cluster
from tests.e2e.pushing import nodeload

WIRE_FIXED = 512 * 1024  # SSH or TLS/websocket framing, gRPC chatter, kubelet's own traffic meanwhile


@dataclass(frozen=True)
class PodRun:
    """One pod that ran an image to completion, as kubelet reported it."""

    node: str
    phase: str
    exit_code: int | None
    image: str
    image_id: str
    log: str


def push(
    cluster: Cluster, image: str, *args: str, kubeconfig: Path | None = None, ok: bool = True
) -> dict[str, dict[str, Any]]:
    """``nodeload push IMAGE ARGS --kubeconfig ... -F ssh_config --json``: the per-node reports."""
    config = kubeconfig or cluster.kubeconfig
    argv = ["push", image, *args, "--kubeconfig", str(config), "-F", str(cluster.ssh_config_path), "--json"]
    proc = nodeload(*argv, check=ok)
    if not proc.stdout.strip():  # a failure before any node (exit 2, or the node source's)
        raise AssertionError(f"nodeload {' '.join(argv)} printed no report:\n{proc.stderr}")
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"nodeload {' '.join(argv)}: no JSON report ({exc}):\n{proc.stderr}") from exc
    return {r["node"]: r for r in report["nodes"]}


def push_fails(cluster: Cluster, image: str, *args: str, kubeconfig: Path | None = None) -> str:
    """Run a push that must fail before reaching any node; its message on stderr."""
    config = kubeconfig or cluster.kubeconfig
    argv = ["push", image, *args, "--kubeconfig", str(config), "-F", str(cluster.ssh_config_path)]
    proc = nodeload(*argv, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def core(cluster: Cluster, user: str | None = None) -> client.CoreV1Api:
    """The core API as the admin (default) or ``user``."""
    return client.CoreV1Api(cluster.api(user))


def run_everywhere(
    cluster: Cluster,
    image: str,
    nodes: Iterable[str],
    *,
    command: Sequence[str] | None = None,
    timeout: float = 120,
) -> dict[str, PodRun]:
    """A Pod per node running ``image`` (or ``command`` in it) with ``imagePullPolicy: Never``
    until it completes; what kubelet reports about each (the pods are deleted afterwards)."""
    api = core(cluster)
    names = {node: f"run-{node}-{secrets.token_hex(3)}" for node in nodes}
    for node, name in names.items():
        body = pod(name, node, image, command=command, restart="Never")
        api.create_namespaced_pod("default", body)
    try:
        return {node: _completed(api, name, node, timeout) for node, name in names.items()}
    finally:
        for name in names.values():
            delete_pod(api, name, "default")


def pod(
    name: str,
    node: str,
    image: str,
    *,
    labels: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    container: str = "app",
    ready: bool = True,
    restart: str | None = None,
) -> client.V1Pod:
    """A Pod bound to ``node`` (no scheduler in the way) that never pulls ``image``."""
    probe = None if ready else client.V1Probe(_exec=client.V1ExecAction(command=["false"]), period_seconds=1)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})),
        spec=client.V1PodSpec(
            node_name=node,
            restart_policy=restart or ("Never" if command is None else "Always"),
            automount_service_account_token=False,
            termination_grace_period_seconds=0,
            containers=[
                client.V1Container(
                    name=container,
                    image=image,
                    image_pull_policy="Never",
                    command=list(command) if command is not None else None,
                    args=list(args) if args is not None else None,
                    readiness_probe=probe,
                )
            ],
        ),
    )


SLEEP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]


def wait_running(api: client.CoreV1Api, namespace: str, names: Iterable[str], timeout: float = 90) -> None:
    """Wait until every pod in ``names`` is Running."""
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        for name in list(pending):
            status = api.read_namespaced_pod(name, namespace).status
            if status.phase == "Running":
                pending.discard(name)
            assert status.phase in ("Pending", "Running"), (name, status)
        assert time.monotonic() < deadline, f"pods never ran: {sorted(pending)}"
        time.sleep(0.5)


def delete_pod(api: client.CoreV1Api, name: str, namespace: str) -> None:
    """Delete a pod now (grace 0); gone already is fine."""
    try:
        api.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _completed(api: client.CoreV1Api, name: str, node: str, timeout: float) -> PodRun:
    deadline = time.monotonic() + timeout
    while True:
        found = api.read_namespaced_pod(name, "default")
        if found.status.phase in ("Succeeded", "Failed"):
            break
        waiting = [s.state.waiting for s in found.status.container_statuses or () if s.state.waiting]
        # ErrImageNeverPull: kubelet does not see the image; it will not change.
        assert not any(w.reason == "ErrImageNeverPull" for w in waiting), (node, waiting)
        assert time.monotonic() < deadline, f"pod {name} on {node} never completed: {found.status}"
        time.sleep(0.3)
    (container,) = found.status.container_statuses
    terminated = container.state.terminated
    log = api.read_namespaced_pod_log(name, "default")
    return PodRun(
        node=node,
        phase=found.status.phase,
        exit_code=terminated.exit_code if terminated else None,
        image=container.image,
        image_id=container.image_id,
        log=log.strip(),
    )


def grant(
    cluster: Cluster, name: str, user: str, rules: list[dict[str, Any]], namespace: str | None = None
) -> None:
    """Give ``user`` a (Cluster)Role called ``name`` with ``rules``, bound to them only."""
    rbac = client.RbacAuthorizationV1Api(cluster.api())
    subject = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    if namespace is None:
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        rbac.create_cluster_role_binding({"metadata": {"name": name}, "roleRef": ref, "subjects": subject})
    else:
        rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        body = {"metadata": {"name": name}, "roleRef": ref, "subjects": subject}
        rbac.create_namespaced_role_binding(namespace, body)


READ_NODES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]


def label_node(cluster: Cluster, node: str, labels: Mapping[str, str | None]) -> None:
    """Set (or, with None, remove) labels on a Node object."""
    core(cluster).patch_node(node, {"metadata": {"labels": dict(labels)}})
