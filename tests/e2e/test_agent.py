"""``--via agent``: nodes nobody has SSH to, reached through their nodeload-agent pod and the
Kubernetes API server's pod exec.

The API server is the stand-in of tests/fakes (real HTTPS, token auth, the exec websocket
subprotocols); each agent pod's exec is relayed to its sandbox node (see tests/fakes/kube_agent.py),
where the relay nodeload asks for (socat) runs against the node's real containerd. The push
path is the real one: bytes are checked against the node's network counter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import image_names, nodeload, run_image
from tests.fakes.kube_agent import AgentPod, AgentPods
from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig

pytestmark = pytest.mark.e2e

WIRE_FIXED = 512 * 1024  # TLS, HTTP and websocket framing, the relays' starts, gRPC chatter


@dataclass
class Cluster:
    """Two sandbox nodes as a Kubernetes cluster with no node addresses: only the API is reachable."""

    sandbox: Sandbox
    api: FakeKubeApi
    agents: AgentPods
    kubeconfig: Path

    def push(self, *args: str, ok: bool = True) -> dict[str, Any]:
        proc = nodeload("push", *args, "--kubeconfig", str(self.kubeconfig), "--json", check=ok)
        report: dict[str, Any] = json.loads(proc.stdout)
        return report


@pytest.fixture()
def cluster(docker_client: docker.DockerClient, node_image: str, tmp_path: Path) -> Iterator[Cluster]:
    with Sandbox(2, image=node_image, client=docker_client) as sb:
        api = FakeKubeApi([node("node-1"), node("node-2")])  # no addresses at all: no SSH
        agents = AgentPods(api)
        for alias in sb.aliases:
            relay = ["ssh", "-F", str(sb.ssh_config_path), "-T", alias, "--"]
            agents.add(AgentPod(f"nodeload-agent-{alias[-1]}x7k2", alias, relay))
        with api:
            kubeconfig = tmp_path / "kubeconfig"
            write_kubeconfig(kubeconfig, [api.token_context("prod", user="alice")])
            yield Cluster(sb, api, agents, kubeconfig)


def test_every_node_through_its_agent_with_dedup(cluster: Cluster, app_images: dict[str, str]) -> None:
    nodes = {alias: cluster.sandbox.node(alias) for alias in ("node-1", "node-2")}
    before = {alias: n.rx_bytes() for alias, n in nodes.items()}
    cold = cluster.push(app_images["v1"], "--all-nodes", "--export", "save")["nodes"]
    assert [r["status"] for r in cold] == ["ok", "ok"], cold
    for result in cold:
        assert result["transport"] == "agent-exec:socat"  # no address: the agent, automatically
        received = nodes[result["node"]].rx_bytes() - before[result["node"]]
        assert result["bytes_sent"] <= received <= 1.05 * result["bytes_sent"] + WIRE_FIXED
        assert run_image(nodes[result["node"]], result["name"], "t-agent") == "hello from v1"
    assert all(pod.execs for pod in cluster.agents.pods.values())  # really through the exec API

    before = {alias: n.rx_bytes() for alias, n in nodes.items()}
    warm = cluster.push(app_images["v2"], "--all-nodes", "--via", "agent", "--export", "save")["nodes"]
    for result in warm:
        assert result["status"] == "ok" and result["blobs_skipped"] > 0
        assert result["bytes_sent"] < 4 * 1024 * 1024  # the changed 3 MiB layer, config, manifest
        assert (
            nodes[result["node"]].rx_bytes() - before[result["node"]]
            <= 1.05 * result["bytes_sent"] + WIRE_FIXED
        )


def test_rbac_and_missing_agents_are_clear_errors(cluster: Cluster, app_images: dict[str, str]) -> None:
    cluster.agents.exec_forbidden.add("alice")
    denied = cluster.push(app_images["v1"], "--node", "node-1", "--via", "agent", ok=False)
    (result,) = denied["nodes"]
    assert result["status"] == "failed"
    assert "cannot create pods/exec in namespace nodeload" in result["error"]

    cluster.agents.exec_forbidden.clear()
    cluster.agents.list_forbidden.add("alice")
    (listing,) = cluster.push(app_images["v1"], "--node", "node-1", "--via", "agent", ok=False)["nodes"]
    assert "cannot list pods in namespace nodeload" in listing["error"]

    cluster.agents.list_forbidden.clear()
    del cluster.agents.pods["nodeload-agent-2x7k2"]
    cluster.agents.pods["nodeload-agent-1x7k2"].ready = False
    report = cluster.push(app_images["v1"], "--all-nodes", "--via", "agent", ok=False)
    errors = {r["node"]: r["error"] for r in report["nodes"]}
    assert "node-1 has no ready nodeload-agent pod" in errors["node-1"] and "none ready" in errors["node-1"]
    assert "node-2 has no ready nodeload-agent pod" in errors["node-2"]
    assert "helm install" in errors["node-2"]
    assert all(app_images["v1"] not in name for name in image_names(cluster.sandbox.node("node-1")))
