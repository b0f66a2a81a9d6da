"""``--seeds``: one upload for the whole cluster, the rest through its peer-to-peer mirror.

Spegel cannot be installed here. The stand-in is a real registry server (Debian's
``docker-registry``, distribution 2.8) in a fifth sandbox container on the nodes' network,
configured as the peers' ``hosts.toml`` mirror for docker.io: exactly the containerd
configuration Spegel writes. It holds the image the seed gets (copied in with skopeo, as Spegel
would serve it from the seed's content store); the peers' pulls are CRI's own, through that
configuration, and the registry's access log shows where their layers came from.

With nodes from a kubeconfig, Spegel's pods are found through the Kubernetes API (the stand-in of
tests/fakes, serving the pods as Spegel's chart renders them); the nodes are reached through their
nodeload-agent pods there, which cannot read the node's files.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload import PushOptions, push
from nodeload.progress import NullProgress
from nodeload.sandbox import Sandbox
from nodeload.sandbox.faults import FaultAt
from nodeload.sandbox.registry_mirror import RegistryMirror
from nodeload.transports.ssh_connect import SSHOptions
from tests.e2e.pushing import nodeload, run_image
from tests.fakes.kube_agent import AgentPod, AgentPods
from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig
from tests.fakes.kube_spegel import SpegelPod, SpegelPods

pytestmark = pytest.mark.e2e

NAME = "docker.io/nodeload-e2e/peers:v1"
NODES = ("node-1", "node-2", "node-3", "node-4")


@dataclass
class Cluster:
    """Four nodes whose containerd pulls docker.io through the mirror on node-5."""

    sandbox: Sandbox
    mirror: RegistryMirror


@pytest.fixture()
def cluster(
    docker_client: docker.DockerClient, node_image: str, app_layout: tuple[Path, int]
) -> Iterator[Cluster]:
    with Sandbox(5, image=node_image, client=docker_client) as sb:
        mirror = RegistryMirror(sb, "node-5").start()
        mirror.configure(NODES)
        mirror.fill(f"oci:{app_layout[0]}:v1", NAME.removeprefix("docker.io/"))
        yield Cluster(sb, mirror)


def test_one_upload_and_the_peers_pull_from_the_mirror(
    cluster: Cluster, app_layout: tuple[Path, int]
) -> None:
    layout, image_bytes = app_layout
    args = ["push", f"oci:{layout}:v1", "--name", NAME, "-F", str(cluster.sandbox.ssh_config_path), "--json"]
    for alias in NODES:
        args += ["--node", alias]
    results = {r["node"]: r for r in json.loads(nodeload(*args).stdout)["nodes"]}

    assert [results[n]["delivered_by"] for n in NODES] == ["push", "peer-pull", "peer-pull", "peer-pull"]
    assert all(r["status"] == "ok" and r["cri_indexed"] for r in results.values()), results
    digests = {r["digest"] for r in results.values()}
    assert len(digests) == 1  # the same image everywhere, by digest
    uplink = sum(r["wire_bytes_sent"] for r in results.values())
    assert image_bytes <= uplink <= 1.1 * image_bytes + 4 * 256 * 1024  # about one image, not four
    for alias in NODES:
        assert run_image(cluster.sandbox.node(alias), NAME, "t-peers") == "hello from v1"
    log = cluster.mirror.log()
    for alias in NODES[1:]:
        peer_ip = cluster.sandbox.node(alias).address("bridge")
        assert f"{peer_ip}" in log and "/blobs/sha256:" in log  # its layers came from the mirror


def test_the_seed_is_the_node_that_already_holds_the_image(
    cluster: Cluster, app_layout: tuple[Path, int]
) -> None:
    layout, image_bytes = app_layout
    config = str(cluster.sandbox.ssh_config_path)
    # node-3 got the image earlier (say, from a run that stopped there).
    nodeload("push", f"oci:{layout}:v1", "--name", NAME, "-F", config, "--node", "node-3")
    args = ["push", f"oci:{layout}:v1", "--name", NAME, "-F", config, "--json"]
    for alias in NODES:
        args += ["--node", alias]
    results = {r["node"]: r for r in json.loads(nodeload(*args).stdout)["nodes"]}

    assert results["node-3"]["delivered_by"] == "push" and results["node-3"]["bytes_sent"] == 0
    assert [results[n]["delivered_by"] for n in ("node-1", "node-2", "node-4")] == ["peer-pull"] * 3
    assert all(r["status"] == "ok" and r["cri_indexed"] for r in results.values()), results
    uplink = sum(r["wire_bytes_sent"] for r in results.values())
    assert uplink < image_bytes / 4  # nothing of the image crossed the uplink this time


def test_a_registry_the_nodes_do_not_mirror_is_pushed_directly_and_said_so(
    cluster: Cluster, app_layout: tuple[Path, int]
) -> None:
    layout, image_bytes = app_layout
    args = ["push", f"oci:{layout}:v1", "--name", "ghcr.io/nodeload-e2e/peers:v1"]
    args += ["-F", str(cluster.sandbox.ssh_config_path), "--json"]
    for alias in NODES:
        args += ["--node", alias]
    results = {r["node"]: r for r in json.loads(nodeload(*args).stdout)["nodes"]}

    assert all(r["status"] == "ok" and r["delivered_by"] == "push" for r in results.values()), results
    assert [results[n]["bytes_sent"] for n in NODES] == [image_bytes] * 4
    for alias in NODES[1:]:
        (warning,) = results[alias]["warnings"]
        assert warning.startswith("no registry mirror for ghcr.io on this node")
        assert "it mirrors docker.io: name the image under one of those with --name" in warning


def test_asked_for_seeds_a_docker_engine_image_is_saved_and_seeded(
    cluster: Cluster, app_images: dict[str, str], tmp_path: Path
) -> None:
    # The default export (the engine's docker push) reaches every node itself: --seeds overrides it.
    args = ["push", app_images["v1"], "--seeds", "1", "-F", str(cluster.sandbox.ssh_config_path), "--json"]
    for alias in NODES:
        args += ["--node", alias]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    results = {r["node"]: r for r in json.loads(nodeload(*args, env=env).stdout)["nodes"]}

    assert {r["export"] for r in results.values()} == {"docker-save"}, results
    assert all(r["status"] == "ok" for r in results.values()), results
    assert results["node-1"]["delivered_by"] == "push"
    for alias in NODES[1:]:  # the stand-in mirror holds another build of the app: peers fall back
        peer = results[alias]
        assert peer["delivered_by"] == "peer-pull" or any("pushed directly" in w for w in peer["warnings"]), (
            peer
        )


def test_a_mirror_down_mid_run_falls_back_to_direct_pushes(
    cluster: Cluster, app_layout: tuple[Path, int]
) -> None:
    layout, _ = app_layout
    # The mirror dies once the seed has the image, before any peer pulls.
    shown = _Shown()
    sink = FaultAt("record", cluster.mirror.stop, inner=shown)
    options = PushOptions.of(name=NAME, ssh=SSHOptions(ssh_config=cluster.sandbox.ssh_config_path))
    results = {r.node: r for r in push(f"oci:{layout}:v1", list(NODES), options, progress=sink)}

    assert sink.fired
    # The progress tells seeds and peers apart.
    assert "seed: pushing for its peers" in shown.lines["node-1"]
    for alias in NODES[1:]:
        assert any(line.startswith("peer: waiting for the seed nodes") for line in shown.lines[alias])
        assert any(line.startswith("peer: pulling through") for line in shown.lines[alias])
        assert not any(line.startswith("seed:") for line in shown.lines[alias])
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}
    assert {r.delivered_by for r in results.values()} == {"push"}
    for alias in NODES[1:]:
        assert any("pulling through" in w and "pushed directly" in w for w in results[alias].warnings)
        assert run_image(cluster.sandbox.node(alias), NAME, "t-fallback") == "hello from v1"


@dataclass
class KubeCluster:
    """The four nodes as a Kubernetes cluster reached only through its API: agent pods, Spegel pods."""

    nodes: Cluster
    agents: AgentPods
    spegel: SpegelPods
    kubeconfig: Path

    def push(self, *args: str) -> dict[str, dict[str, Any]]:
        proc = nodeload("push", *args, "--kubeconfig", str(self.kubeconfig), "--all-nodes", "--json")
        return {r["node"]: r for r in json.loads(proc.stdout)["nodes"]}


@pytest.fixture()
def kube_cluster(cluster: Cluster, tmp_path: Path) -> Iterator[KubeCluster]:
    api = FakeKubeApi([node(alias) for alias in NODES])  # no addresses: through the agents
    agents, spegel = AgentPods(api), SpegelPods(api)
    for alias in NODES:
        relay = ["ssh", "-F", str(cluster.sandbox.ssh_config_path), "-T", alias, "--"]
        agents.add(AgentPod(f"nodeload-agent-{alias}", alias, relay))
        spegel.add(SpegelPod(f"spegel-{alias}", alias))
    with api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [api.token_context("prod", user="alice")])
        yield KubeCluster(cluster, agents, spegel, kubeconfig)


def test_spegel_found_through_the_api_lets_agent_nodes_pull_from_their_peers(
    kube_cluster: KubeCluster, app_layout: tuple[Path, int]
) -> None:
    layout, image_bytes = app_layout
    kube_cluster.spegel.pods["spegel-node-4"].ready = False  # its node cannot pull from peers now
    results = kube_cluster.push(f"oci:{layout}:v1", "--name", NAME)

    assert [results[n]["delivered_by"] for n in NODES] == ["push", "peer-pull", "peer-pull", "push"]
    assert all(r["status"] == "ok" and r["cri_indexed"] for r in results.values()), results
    assert {r["reach"] for r in results.values()} == {"agent-exec:socat"}
    assert results["node-4"]["warnings"] == [
        "Spegel's pod on this node (spegel/spegel-node-4) is not ready: pushed directly"
    ]
    uplink = sum(r["wire_bytes_sent"] for r in results.values())
    assert 2 * image_bytes <= uplink <= 2.2 * image_bytes + 4 * 512 * 1024  # the seed and node-4 only
    log = kube_cluster.nodes.mirror.log()
    for alias in ("node-2", "node-3"):
        assert kube_cluster.nodes.sandbox.node(alias).address("bridge") in log
        assert run_image(kube_cluster.nodes.sandbox.node(alias), NAME, "t-spegel") == "hello from v1"
    # The API said which nodes run Spegel: nothing read the nodes' mirror files through the agents.
    commands = [" ".join(argv) for pod in kube_cluster.agents.pods.values() for argv in pod.execs]
    assert commands and not [c for c in commands if "certs.d" in c or "registries.yaml" in c]


def test_a_registry_spegel_does_not_mirror_is_pushed_directly_and_said_so(
    kube_cluster: KubeCluster, app_layout: tuple[Path, int]
) -> None:
    layout, image_bytes = app_layout
    for pod in kube_cluster.spegel.pods.values():
        pod.registries = ("https://ghcr.io", "https://quay.io")
    results = kube_cluster.push(f"oci:{layout}:v1", "--name", NAME)

    assert all(r["status"] == "ok" and r["delivered_by"] == "push" for r in results.values()), results
    for alias in NODES[1:]:
        (warning,) = results[alias]["warnings"]
        assert (
            warning.startswith("Spegel (spegel/spegel-")
            and "mirrors ghcr.io, quay.io, not docker.io" in warning
        )
        assert "--name" in warning and warning.endswith("pushed directly")
    assert sum(r["bytes_sent"] for r in results.values()) == 4 * image_bytes  # no peer pulled
    assert NAME.removeprefix("docker.io/") not in kube_cluster.nodes.mirror.log()


class _Shown(NullProgress):
    """The status lines the progress display would show, per node."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = defaultdict(list)

    def message(self, node: str, text: str) -> None:
        self.lines[node].append(text)
