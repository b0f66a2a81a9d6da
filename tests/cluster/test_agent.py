"""``--reach agent`` through a real API server's ``pods/exec`` into the agent DaemonSet.

The DaemonSet, its namespace, ServiceAccount and the ``pushers`` Role are the chart's own
manifests (``charts/nodeload-agent``, rendered without helm by tests/helpers/helm.py: the chart
stays the single source), with its image values pointed at a small sh + socat image built here
and pushed to the nodes by nodeload itself (the chart's default, alpine/socat, cannot be pulled
on this machine). Real RBAC decides who may push, real kubelets run the relay, and the API
server's audit log says which pods were exec'd into.

What still uses the stand-in API (tests/fakes/kube_api.py): the ``v5.channel.k8s.io`` exec
protocol (its close frame), which a 1.20 API server does not speak (it arrived in 1.29).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils

from nodeload.sandbox import build_image
from nodeload.sandbox.k8s import Cluster
from tests.cluster.conftest import repo_path
from tests.cluster.kube import (
    READ_NODES,
    SLEEP,
    WIRE_FIXED,
    core,
    delete_pod,
    grant,
    label_node,
    pod,
    push,
    run_everywhere,
    wait_running,
)
from tests.helpers.helm import manifests

pytestmark = pytest.mark.e2e

CHART = repo_path() / "charts" / "nodeload-agent"
# The label nodeload finds agents by. An impostor with the DaemonSet's whole selector (name and
# instance) does not last on a real cluster: the DaemonSet adopts it and deletes the extra pod.
AGENT_LABELS = {"app.kubernetes.io/name": "nodeload-agent"}
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


def install_chart(cluster: Cluster, socat: str, **values: Any) -> list[dict[str, Any]]:
    """Create what the chart renders to, its image the local socat image; wait for every agent."""
    repository, _, tag = socat.rpartition(":")
    image = {"repository": repository, "tag": tag, "pullPolicy": "Never"}
    objects = manifests(CHART, {"image": image, **values})
    objects.sort(key=lambda obj: obj["kind"] != "Namespace")  # the namespace first, as helm does
    api = cluster.api()
    for obj in objects:
        utils.create_from_dict(api, obj)
    namespace = values.get("namespace", "nodeload")
    pods = core(cluster)
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    apps = client.AppsV1Api(api)
    for _ in range(300):
        status = apps.read_namespaced_daemon_set(daemonset["metadata"]["name"], namespace).status
        if status.desired_number_scheduled and status.number_ready == status.desired_number_scheduled:
            break
        time.sleep(0.3)
    else:
        listed = pods.list_namespaced_pod(namespace).items
        raise AssertionError(f"agents never ready: {[(p.metadata.name, p.status.phase) for p in listed]}")
    return objects


def uninstall(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    """Delete the chart's namespace (and with it everything in it)."""
    for obj in objects:
        if obj["kind"] == "Namespace":
            core(cluster).delete_namespace(obj["metadata"]["name"])


def agent_pods(cluster: Cluster, namespace: str = "nodeload") -> dict[str, str]:
    """Node name -> the name of the DaemonSet's pod there."""
    listed = core(cluster).list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=nodeload-agent"
    )
    return {p.spec.node_name: p.metadata.name for p in listed.items if p.metadata.owner_references}


def execs(cluster: Cluster, user: str | None = None) -> list[str]:
    """The pods exec'd into so far (``namespace/name``), as the API server audited them."""
    return [
        f"{e['objectRef']['namespace']}/{e['objectRef']['name']}"
        for e in cluster.audit_events()
        if e["objectRef"].get("subresource") == "exec"
        and e.get("stage") == "ResponseStarted"
        and (user is None or e["user"]["username"] == user)
    ]


PUSHERS = [{"kind": "User", "name": "pusher"}, {"kind": "User", "name": "role-only"}]


@pytest.fixture(scope="module")
def agents(cluster: Cluster, socat: str) -> Iterator[list[dict[str, Any]]]:
    """The chart installed with controlPlane=true and users ``pusher`` and ``role-only`` as pushers."""
    objects = install_chart(cluster, socat, controlPlane=True, pushers=PUSHERS)
    yield objects
    uninstall(cluster, objects)


@pytest.fixture(scope="module")
def pusher(cluster: Cluster, agents: list[dict[str, Any]]) -> Path:
    """The kubeconfig of ``pusher``: nothing but what the chart's pushers value grants."""
    return cluster.add_user("pusher")


def test_the_pushers_rbac_alone_finds_the_nodes_and_their_agents(
    cluster: Cluster, agents: list[dict[str, Any]], tiny: str
) -> None:
    """nodeload lists the cluster's nodes, then finds and execs into their agent pods: the
    chart's pushers value grants exactly that (Node get/list, pods and pods/exec in its namespace)."""
    kubeconfig = cluster.add_user("role-only")
    results = push(cluster, tiny, "--all-nodes", "--reach", "agent", kubeconfig=kubeconfig)
    assert results and all(r["status"] == "ok" for r in results.values()), results


def test_every_node_through_its_agent_then_kubelet_runs_the_image(
    cluster: Cluster, pusher: Path, engine: Any
) -> None:
    image = "nodeload-cluster/through-agent:1"
    config_digest = build_image(engine, image, "hello through the agent")
    agents = agent_pods(cluster)
    assert sorted(agents) == cluster.node_names  # controlPlane=true: one agent on every node
    nodes = {name: cluster.node(name) for name in cluster.node_names}
    before = {name: node.rx_bytes() for name, node in nodes.items()}
    exec_count = len(execs(cluster, "pusher"))
    results = push(cluster, image, "--all-nodes", "--reach", "agent", "--export", "save", kubeconfig=pusher)
    for name, result in results.items():
        assert result["status"] == "ok" and result["cri_indexed"], result
        assert result["reach"] == "agent-exec:socat"
        received = nodes[name].rx_bytes() - before[name]  # apiserver -> kubelet, on the node's NIC
        assert result["bytes_sent"] <= received <= 1.1 * result["bytes_sent"] + WIRE_FIXED
    # The API server saw the pusher exec into the DaemonSet's pods, and only into them.
    exec_targets = execs(cluster, "pusher")[exec_count:]
    assert exec_targets and set(exec_targets) == {f"nodeload/{p}" for p in agents.values()}

    runs = run_everywhere(cluster, image, cluster.node_names)
    for run in runs.values():
        assert (run.phase, run.log, run.image_id) == ("Succeeded", "hello through the agent", config_digest)


def test_rights_short_of_the_role_fail_each_node_with_what_is_missing(
    cluster: Cluster, agents: list[dict[str, Any]], tiny: str
) -> None:
    cluster.add_user("reader")
    grant(cluster, "nodeload-test-reader-nodes", "reader", READ_NODES)
    kubeconfig = cluster.directory / "users" / "reader.kubeconfig"
    results = push(cluster, tiny, "--all-nodes", "--reach", "agent", kubeconfig=kubeconfig, ok=False)
    for name in cluster.node_names:
        assert results[name]["status"] == "failed"
        assert "cannot list pods in namespace nodeload" in results[name]["error"], results[name]

    pods_only = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    grant(cluster, "nodeload-test-reader-pods", "reader", pods_only, namespace="nodeload")
    results = push(cluster, tiny, "--all-nodes", "--reach", "agent", kubeconfig=kubeconfig, ok=False)
    for name in cluster.node_names:
        assert results[name]["status"] == "failed"
        assert "cannot create pods/exec in namespace nodeload" in results[name]["error"], results[name]


def test_a_pod_that_only_copies_the_agent_s_labels_is_never_exec_d_into(
    cluster: Cluster, pusher: Path, socat: str, tiny: str
) -> None:
    """Anyone who may create pods in the agent namespace can label one as an agent; this one runs
    on node-1 and sorts before the DaemonSet's pod there, so without the owner check it would
    have carried the push. The API server's audit log shows no exec into it."""
    api = core(cluster)
    impostor = "nodeload-agent-0impostor"
    api.create_namespaced_pod("nodeload", pod(impostor, "node-1", socat, labels=AGENT_LABELS, command=SLEEP))
    try:
        wait_running(api, "nodeload", [impostor])
        before = len(execs(cluster))
        results = push(cluster, tiny, "--node", "node-1", "--reach", "agent", kubeconfig=pusher)
        assert results["node-1"]["status"] == "ok", results
        exec_targets = execs(cluster)[before:]
        assert exec_targets and f"nodeload/{impostor}" not in exec_targets
        assert set(exec_targets) == {f"nodeload/{agent_pods(cluster)['node-1']}"}
    finally:
        delete_pod(api, impostor, "nodeload")


@pytest.fixture()
def control_plane_agents(cluster: Cluster, socat: str, pusher: Path) -> Iterator[str]:
    """node-1 labelled a control plane, and the chart installed again (namespace nodeload-cp) as
    it is by default: no agent on control-plane nodes."""
    label_node(cluster, "node-1", {CONTROL_PLANE: ""})
    objects: list[dict[str, Any]] = []
    try:
        objects = install_chart(cluster, socat, namespace="nodeload-cp", pushers=PUSHERS)
        yield "nodeload-cp"
    finally:
        uninstall(cluster, objects)
        label_node(cluster, "node-1", {CONTROL_PLANE: None})


def test_a_control_plane_node_without_an_agent_says_how_to_have_one(
    cluster: Cluster, control_plane_agents: str, pusher: Path, socat: str, tiny: str
) -> None:
    """The scheduler kept the DaemonSet off node-1; nodeload says why that node failed, and an
    impostor there is named rather than used."""
    assert sorted(agent_pods(cluster, control_plane_agents)) == ["node-2"]
    kubeconfig = pusher
    args = ("--all-nodes", "--reach", "agent", "--agent-namespace", control_plane_agents)
    results = push(cluster, tiny, *args, kubeconfig=kubeconfig, ok=False)
    assert results["node-2"]["status"] == "ok"
    assert results["node-1"]["status"] == "failed"
    error = results["node-1"]["error"]
    assert "node node-1 has no ready nodeload-agent pod in namespace nodeload-cp" in error, error
    assert "control-plane node" in error and "controlPlane=true" in error

    api = core(cluster)
    impostor = "nodeload-agent-impostor"
    body = pod(impostor, "node-1", socat, labels=AGENT_LABELS, command=SLEEP)
    api.create_namespaced_pod(control_plane_agents, body)
    try:
        wait_running(api, control_plane_agents, [impostor])
        before = len(execs(cluster))
        results = push(cluster, tiny, *args, kubeconfig=kubeconfig, ok=False)
        assert results["node-1"]["status"] == "failed"
        assert (
            f"pod {impostor} has the agent's labels but is not owned by the nodeload-agent DaemonSet"
            in results["node-1"]["error"]
        ), results["node-1"]
        assert f"{control_plane_agents}/{impostor}" not in execs(cluster)[before:]
    finally:
        delete_pod(api, impostor, control_plane_agents)
