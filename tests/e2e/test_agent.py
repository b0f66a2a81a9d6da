"""``--reach agent``: nodes nobody has SSH to, reached through their nodeload-agent pod and the
Kubernetes API server's pod exec.

The API server is the stand-in of tests/fakes (real HTTPS, token auth, the exec websocket
subprotocols); each agent pod's exec is relayed to its sandbox node (see tests/fakes/kube_agent.py),
where the relay nodeload asks for (socat) runs against the node's real containerd. The push
path is the real one: bytes are checked against the node's network counter.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.nodes.spec import NodeSpec
from nodeload.sandbox import Sandbox
from nodeload.transports.docker_exec import DockerExecTransport
from tests.e2e.pushing import image_names, nodeload, run_image
from tests.fakes.kube_agent import AgentPod, AgentPods
from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig
from tests.helpers.helm import manifests

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
        assert result["reach"] == "agent-exec:socat"  # no address: the agent, automatically
        received = nodes[result["node"]].rx_bytes() - before[result["node"]]
        assert result["bytes_sent"] <= received <= 1.05 * result["bytes_sent"] + WIRE_FIXED
        assert run_image(nodes[result["node"]], result["name"], "t-agent") == "hello from v1"
    assert all(pod.execs for pod in cluster.agents.pods.values())  # really through the exec API

    before = {alias: n.rx_bytes() for alias, n in nodes.items()}
    warm = cluster.push(app_images["v2"], "--all-nodes", "--reach", "agent", "--export", "save")["nodes"]
    for result in warm:
        assert result["status"] == "ok" and result["blobs_skipped"] > 0
        assert result["bytes_sent"] < 4 * 1024 * 1024  # the changed 3 MiB layer, config, manifest
        assert (
            nodes[result["node"]].rx_bytes() - before[result["node"]]
            <= 1.05 * result["bytes_sent"] + WIRE_FIXED
        )


def test_rbac_and_missing_agents_are_clear_errors(cluster: Cluster, app_images: dict[str, str]) -> None:
    cluster.agents.exec_forbidden.add("alice")
    denied = cluster.push(app_images["v1"], "--node", "node-1", "--reach", "agent", ok=False)
    (result,) = denied["nodes"]
    assert result["status"] == "failed"
    assert "cannot create pods/exec in namespace nodeload" in result["error"]

    cluster.agents.exec_forbidden.clear()
    cluster.agents.list_forbidden.add("alice")
    (listing,) = cluster.push(app_images["v1"], "--node", "node-1", "--reach", "agent", ok=False)["nodes"]
    assert "cannot list pods in namespace nodeload" in listing["error"]

    cluster.agents.list_forbidden.clear()
    del cluster.agents.pods["nodeload-agent-2x7k2"]
    cluster.agents.pods["nodeload-agent-1x7k2"].ready = False
    report = cluster.push(app_images["v1"], "--all-nodes", "--reach", "agent", ok=False)
    errors = {r["node"]: r["error"] for r in report["nodes"]}
    assert "node-1 has no ready nodeload-agent pod" in errors["node-1"] and "none ready" in errors["node-1"]
    assert "node-2 has no ready nodeload-agent pod" in errors["node-2"]
    assert "helm install" in errors["node-2"]
    assert all(app_images["v1"] not in name for name in image_names(cluster.sandbox.node("node-1")))


def test_a_pod_that_only_copies_the_agent_s_labels_never_gets_the_image(
    cluster: Cluster, app_images: dict[str, str]
) -> None:
    """Anyone who may create pods in the agent namespace can label one as an agent: only the
    DaemonSet's own pods are exec'd into. Each impostor here reaches its node and sorts before
    the real agent, so without the owner check it would have carried the push."""
    to_node_1 = cluster.agents.pods["nodeload-agent-1x7k2"].relay
    to_node_2 = cluster.agents.pods.pop("nodeload-agent-2x7k2").relay  # node-2: no real agent
    before = cluster.agents.add(AgentPod("nodeload-agent-1aaaa", "node-1", to_node_1, owners=[]))
    alone = cluster.agents.add(AgentPod("nodeload-agent-2aaaa", "node-2", to_node_2, owners=[]))
    report = cluster.push(app_images["v1"], "--all-nodes", "--reach", "agent", ok=False)
    results = {r["node"]: r for r in report["nodes"]}
    assert results["node-1"]["status"] == "ok" and results["node-1"]["reach"] == "agent-exec:socat"
    assert results["node-2"]["status"] == "failed"
    assert (
        "pod nodeload-agent-2aaaa has the agent's labels but is not owned by the nodeload-agent DaemonSet"
        in results["node-2"]["error"]
    )
    assert before.execs == [] and alone.execs == []
    assert all(app_images["v1"] not in name for name in image_names(cluster.sandbox.node("node-2")))


CHART = Path(__file__).resolve().parents[2] / "charts" / "nodeload-agent"


def test_the_chart_s_locked_down_container_still_relays_to_a_root_socket(
    docker_client: docker.DockerClient, node_image: str
) -> None:
    """The agent container exactly as the chart secures it, in Docker's terms: root without any
    capability, no privilege escalation, the runtime's default seccomp filter, read-only root
    filesystem and socket directory. nodeload's probe and relay reach a root-owned socket (0660
    in a 0711 directory, as containerd's) through it, and nothing can be written beside it."""
    (daemonset,) = [o for o in manifests(CHART) if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # Docker's default
    assert "add" not in context["capabilities"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/run/containerd"]
    volume = docker_client.volumes.create()
    started = []
    try:
        socket = "socat UNIX-LISTEN:/sock/containerd.sock,fork,mode=660 EXEC:cat"
        started.append(
            docker_client.containers.run(
                node_image,
                entrypoint=["sh", "-c", f"chmod 711 /sock && exec {socket}"],
                volumes={volume.name: {"bind": "/sock", "mode": "rw"}},
                detach=True,
            )
        )
        agent = docker_client.containers.run(
            node_image,
            entrypoint=container["command"],
            user=f"{context['runAsUser']}:{context['runAsGroup']}",
            privileged=context["privileged"],
            cap_drop=context["capabilities"]["drop"],
            security_opt=[] if context["allowPrivilegeEscalation"] else ["no-new-privileges"],
            read_only=context["readOnlyRootFilesystem"],
            volumes={volume.name: {"bind": mount["mountPath"], "mode": "ro" if mount["readOnly"] else "rw"}},
            detach=True,
        )
        started.append(agent)
        for _ in range(100):  # the server container may still be starting socat
            if agent.exec_run(["test", "-S", "/run/containerd/containerd.sock"]).exit_code == 0:
                break
            time.sleep(0.1)
        assert asyncio.run(_echo_through_relay(agent.name)) == b"hello through the relay"
        for write in ("touch /run/containerd/x", "rm /run/containerd/containerd.sock"):
            code, output = agent.exec_run(["sh", "-c", write])
            assert code != 0 and b"Read-only file system" in output, (write, output)
    finally:
        for started_container in started:
            started_container.remove(force=True, v=True)  # and the image's /var/lib/containerd volume
        volume.remove(force=True)


async def _echo_through_relay(container: str) -> bytes:
    async with DockerExecTransport(NodeSpec(container, reach="docker", container=container)) as transport:
        target = await transport.open_socket("/run/containerd/containerd.sock")
        assert transport.reach == "docker-exec:socat"
        reader, writer = await asyncio.open_unix_connection(target.removeprefix("unix:"))
        writer.write(b"hello through the relay")
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data
