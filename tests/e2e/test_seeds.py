"""``--seeds``: one upload for the whole cluster, the rest through its peer-to-peer mirror.

Spegel cannot be installed here. The stand-in is a real registry server (Debian's
``docker-registry``, distribution 2.8) in a fifth sandbox container on the nodes' network,
configured as the peers' ``hosts.toml`` mirror for docker.io: exactly the containerd
configuration Spegel writes. It holds the image the seed gets (copied in with skopeo, as Spegel
would serve it from the seed's content store); the peers' pulls are CRI's own, through that
configuration, and the registry's access log shows where their layers came from.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from nodeload import PushOptions, push
from nodeload.progress import NullProgress
from nodeload.sandbox import Sandbox
from nodeload.sandbox.faults import FaultAt
from nodeload.sandbox.registry_mirror import RegistryMirror
from nodeload.transports.ssh_connect import SSHOptions
from tests.e2e.pushing import nodeload, run_image

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

    assert [results[n]["via"] for n in NODES] == ["push", "peer-pull", "peer-pull", "peer-pull"]
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

    assert results["node-3"]["via"] == "push" and results["node-3"]["bytes_sent"] == 0
    assert [results[n]["via"] for n in ("node-1", "node-2", "node-4")] == ["peer-pull"] * 3
    assert all(r["status"] == "ok" and r["cri_indexed"] for r in results.values()), results
    uplink = sum(r["wire_bytes_sent"] for r in results.values())
    assert uplink < image_bytes / 4  # nothing of the image crossed the uplink this time


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
    assert results["node-1"]["via"] == "push"
    for alias in NODES[1:]:  # the stand-in mirror holds another build of the app: peers fall back
        peer = results[alias]
        assert peer["via"] == "peer-pull" or any("pushed directly" in w for w in peer["warnings"]), peer


def test_a_mirror_down_mid_run_falls_back_to_direct_pushes(
    cluster: Cluster, app_layout: tuple[Path, int]
) -> None:
    layout, _ = app_layout
    # The mirror dies once the seed has the image, before any peer pulls.
    shown = _Shown()
    sink = FaultAt("record", cluster.mirror.stop, inner=shown)
    options = PushOptions(name=NAME, ssh=SSHOptions(ssh_config=cluster.sandbox.ssh_config_path))
    results = {r.node: r for r in push(f"oci:{layout}:v1", list(NODES), options, progress=sink)}

    assert sink.fired
    # The progress tells seeds and peers apart.
    assert "seed: pushing for its peers" in shown.lines["node-1"]
    for alias in NODES[1:]:
        assert any(line.startswith("peer: waiting for the seed nodes") for line in shown.lines[alias])
        assert any(line.startswith("peer: pulling through") for line in shown.lines[alias])
        assert not any(line.startswith("seed:") for line in shown.lines[alias])
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}
    assert {r.via for r in results.values()} == {"push"}
    for alias in NODES[1:]:
        assert any("pulling through" in w and "pushed directly" in w for w in results[alias].warnings)
        assert run_image(cluster.sandbox.node(alias), NAME, "t-fallback") == "hello from v1"


class _Shown(NullProgress):
    """The status lines the progress display would show, per node."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = defaultdict(list)

    def message(self, node: str, text: str) -> None:
        self.lines[node].append(text)
