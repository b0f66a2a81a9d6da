"""The sandbox cluster itself: a real control plane and kubelets, and nothing of it reaching
beyond this machine or changing it."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import docker
import pytest

from nodeload.sandbox.k8s import KUBERNETES_VERSION, Cluster
from nodeload.sandbox.k8s.node import KUBELET_SYSCTLS
from tests.cluster.kube import core, push, run_everywhere

pytestmark = pytest.mark.e2e

# Read when this module is collected, before any cluster of the session starts.
HOST_SYSCTLS = {key: Path("/proc/sys", key.replace(".", "/")).read_text().strip() for key in KUBELET_SYSCTLS}


def test_kubelet_registered_every_node_with_what_it_found(cluster: Cluster) -> None:
    nodes = {n.metadata.name: n for n in core(cluster).list_node().items}
    assert sorted(nodes) == cluster.node_names
    for name, node in nodes.items():
        info = node.status.node_info
        assert info.kubelet_version == f"v{KUBERNETES_VERSION}"
        assert info.container_runtime_version.startswith("containerd://1.6")
        addresses = {a.type: a.address for a in node.status.addresses}
        assert addresses == {"InternalIP": cluster.node(name).ip, "Hostname": name}
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"


def test_nothing_can_leave_the_machine(cluster: Cluster, engine: docker.DockerClient, tiny: str) -> None:
    """The node network is internal, nodes and pods have no default route, kubelet's cloud
    metadata probe is off, and the control plane listens on loopback and the bridge only."""
    assert cluster.network is not None
    network = engine.networks.get(cluster.network)
    assert network.attrs["Internal"] is True
    gateway = next(c["Gateway"] for c in network.attrs["IPAM"]["Config"])
    for name in cluster.node_names:
        node = cluster.node(name)
        assert "default" not in node.check_output(["ip", "route"])
        kubelet_env = node.check_output(["sh", "-c", 'tr "\\0" "\\n" </proc/$(pgrep -x kubelet)/environ'])
        assert "AWS_EC2_METADATA_DISABLED=true" in kubelet_env.splitlines()

    push(cluster, tiny, "--all-nodes", "--export", "save")
    runs = run_everywhere(cluster, tiny, cluster.node_names, command=["/bin/busybox", "ip", "route"])
    for run in runs.values():  # the pods' own view: their node's bridge subnet, nothing else
        assert run.phase == "Succeeded" and run.log.startswith("10.244."), run
        assert "default" not in run.log, run

    for pid in _control_plane_pids(cluster):
        for address in _listening(pid):
            assert address in ("127.0.0.1", gateway), f"pid {pid} listens on {address}"


def test_kubelet_s_kernel_settings_stay_in_the_nodes(cluster: Cluster) -> None:
    """kubelet sees the values it insists on through files bound over /proc/sys in each node;
    the host's own settings are what they were before the cluster started."""
    for name in cluster.node_names:
        node = cluster.node(name)
        mounts = node.check_output(["cat", "/proc/self/mountinfo"])
        for key, value in KUBELET_SYSCTLS.items():
            path = "/proc/sys/" + key.replace(".", "/")
            assert f" {path} " in mounts, f"{path} is not covered in {name}"
            assert node.check_output(["cat", path]).strip() == value
    now = {key: Path("/proc/sys", key.replace(".", "/")).read_text().strip() for key in KUBELET_SYSCTLS}
    assert now == HOST_SYSCTLS


def _control_plane_pids(cluster: Cluster) -> list[int]:
    state = json.loads((cluster.directory / "state.json").read_text())
    return [int(p["pid"]) for p in state["processes"]]


def _listening(pid: int) -> set[str]:
    """The local addresses of the TCP sockets ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                hex_address = fields[1].split(":")[0]
                raw = bytes.fromhex(hex_address)
                if width == 8:
                    found.add(str(ipaddress.IPv4Address(raw[::-1])))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(str(ipaddress.IPv6Address(words)))
    return found
