"""``nodeload sandbox cluster up|down``: a cluster that outlives the command that started it, and
is removed whole by another."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
from kubernetes import client, config

from nodeload.sandbox.k8s import Cluster, sweep_clusters
from nodeload.sandbox.k8s.cluster import clusters_dir
from nodeload.sandbox.k8s.processes import HostProcess
from tests.e2e.pushing import nodeload

pytestmark = pytest.mark.e2e


def test_up_leaves_a_ready_cluster_and_down_removes_all_of_it(
    cluster: Cluster, engine: docker.DockerClient
) -> None:
    """(``cluster``: the binaries are built, and this runs with the other cluster tests.)"""
    name = f"cli-{os.getpid()}"
    up = nodeload("sandbox", "cluster", "up", "--name", name, "--nodes", "1", "--json")
    report = json.loads(up.stdout)
    directory = clusters_dir() / name
    try:
        state = json.loads((directory / "state.json").read_text())
        processes = [HostProcess.from_json(p) for p in state["processes"]]
        assert [p.name for p in processes] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
        assert all(p.alive() for p in processes)  # after the command has exited
        api = client.CoreV1Api(config.new_client_from_config(report["kubeconfig"]))
        (node,) = api.list_node().items
        assert node.metadata.name == "node-1"
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        (container,) = state["containers"]
        labels = engine.containers.get(container).labels
        assert labels["nodeload.sandbox.pid"] == str(processes[0].pid)  # kept while its etcd lives
    finally:
        nodeload("sandbox", "cluster", "down", "--name", name)
    assert not directory.exists()
    assert not any(p.alive() for p in processes)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container)
    with pytest.raises(docker.errors.NotFound):
        engine.networks.get(state["network"])
    for root in state["cgroup_roots"]:
        assert not list(Path("/sys/fs/cgroup").glob(f"*/{root}"))


def test_a_cluster_whose_owner_is_gone_is_swept(cluster: Cluster) -> None:
    """What a killed test session leaves: a state file whose owner process has ended."""
    owner = subprocess.Popen(["sleep", "0"])
    owner.wait()  # its PID is now free: an owner that has ended
    directory = clusters_dir() / f"leftover-{os.getpid()}"
    directory.mkdir(parents=True)
    state = {"name": directory.name, "owner_pid": owner.pid, "host": os.uname().nodename}
    (directory / "state.json").write_text(json.dumps(state))
    live = clusters_dir() / cluster.name
    assert sweep_clusters() >= 1
    assert not directory.exists()
    assert live.exists()  # the session's own cluster is kept: its owner is alive
