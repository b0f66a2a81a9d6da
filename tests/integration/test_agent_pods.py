"""Which pod ``--reach agent`` execs into: only one the chart's DaemonSet made, on the node.

Against the stand-in API server (tests/fakes): its agent pods run what is exec'd in them on this
machine (``sh -c``), and record it, so a test sees which pod received the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeload.errors import NodeUnreachable
from nodeload.nodes.spec import KubeAccess, NodeSpec
from nodeload.transports.agent import AgentTransport
from nodeload.transports.execs import run_text
from tests.fakes.kube_agent import AgentPod, AgentPods, daemonset_owner
from tests.fakes.kube_api import CONTROL_PLANE, FakeKubeApi, control_plane_taint, node, write_kubeconfig

pytestmark = pytest.mark.integration

LOCAL = ["sh", "-c"]  # an exec in the fake's pod runs here


@dataclass
class Cluster:
    api: FakeKubeApi
    agents: AgentPods
    kubeconfig: Path

    def run(self, node_name: str, command: str = "echo hello") -> str:
        """``command`` in ``node_name``'s agent pod, as a push's relay would start it."""
        access = KubeAccess((self.kubeconfig,), "prod", "alice", self.api.url)
        spec = NodeSpec(node_name, reach="agent", kube=access)

        async def main() -> str:
            async with AgentTransport(spec) as transport:
                _, out, _ = await run_text(transport.executor(), command)
                return out

        return asyncio.run(main())


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    api = FakeKubeApi(
        [node("worker-1"), node("cp-1", labels={CONTROL_PLANE: ""}, taints=[control_plane_taint()])]
    )
    agents = AgentPods(api)
    with api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [api.token_context("prod", user="alice")])
        yield Cluster(api, agents, kubeconfig)


IMPOSTOR_OWNERS = {
    "no owner": [],
    "another DaemonSet": [daemonset_owner("nodeload-agent-copy")],
    "not its controller": [daemonset_owner(controller=False)],
    "a ReplicaSet of that name": [{**daemonset_owner(), "kind": "ReplicaSet"}],
    "an older API group": [{**daemonset_owner(), "apiVersion": "extensions/v1beta1"}],
}


def test_a_pod_with_the_labels_but_not_the_daemonset_s_is_passed_over(cluster: Cluster) -> None:
    """It sorts first and is ready: before the owner check, it got the exec (and the images)."""
    impostor = cluster.agents.add(AgentPod("nodeload-agent-0aaaa", "worker-1", LOCAL, owners=[]))
    agent = cluster.agents.add(AgentPod("nodeload-agent-zx7k2", "worker-1", LOCAL))
    assert cluster.run("worker-1").strip() == "hello"
    assert impostor.execs == [] and agent.execs


@pytest.mark.parametrize("owners", IMPOSTOR_OWNERS.values(), ids=IMPOSTOR_OWNERS.keys())
def test_a_node_with_only_an_impostor_fails_and_says_why(
    cluster: Cluster, owners: list[dict[str, object]]
) -> None:
    impostor = cluster.agents.add(AgentPod("nodeload-agent-0aaaa", "worker-1", LOCAL, owners=owners))
    with pytest.raises(NodeUnreachable) as err:
        cluster.run("worker-1")
    assert (
        "pod nodeload-agent-0aaaa has the agent's labels but is not owned by the nodeload-agent DaemonSet"
        in str(err.value)
    )
    assert "node worker-1 has no ready nodeload-agent pod" in str(err.value)
    assert impostor.execs == []


def test_the_daemonset_s_pods_are_used_as_before(cluster: Cluster) -> None:
    agent = cluster.agents.add(AgentPod("nodeload-agent-x7k2", "worker-1", LOCAL))
    assert cluster.run("worker-1", "id -u").strip().isdigit() and agent.execs


def test_a_control_plane_node_without_an_agent_says_how_to_have_one(cluster: Cluster) -> None:
    """The chart leaves control planes out by default: the error says so, not "install it"."""
    with pytest.raises(NodeUnreachable, match=r"control-plane node.*--set controlPlane=true"):
        cluster.run("cp-1")
    with pytest.raises(NodeUnreachable, match=r"no agent pod there\); install it with helm install"):
        cluster.run("worker-1")
