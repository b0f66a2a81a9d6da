"""A real Kubernetes for the cluster suite: nodeload's own ``nodeload_cluster`` fixture.

kube-apiserver, kube-controller-manager and kube-scheduler (built once from Debian's
``kubernetes`` source package, cached in ~/.cache/nodeload/k8s) and etcd run on this machine,
bound to a private ``--internal`` Docker network; kubelet runs in two sandbox node containers
(containerd 1.6 with CRI) on it. One cluster serves the whole session; tests restore what they
change (labels, RBAC, pods).
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from nodeload.sandbox import build_image, docker_client
from nodeload.sandbox.k8s import Cluster
from tests.cluster.images import socat_image
from tests.cluster.kube import push

# The agent chart's image, built here (alpine/socat cannot be pulled) and pushed with nodeload.
SOCAT_IMAGE = "nodeload-cluster/socat:1"


@pytest.fixture(scope="session")
def cluster(nodeload_cluster: Cluster) -> Cluster:
    """The session's cluster (admin kubeconfig, SSH files, node containers)."""
    return nodeload_cluster


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    """The local Docker engine, where the test images are built."""
    return docker_client()


@pytest.fixture(scope="session")
def socat(cluster: Cluster, engine: docker.DockerClient) -> str:
    """A small sh + socat image on every node (pushed by nodeload over SSH); its name there."""
    socat_image(engine, SOCAT_IMAGE)
    results = push(cluster, SOCAT_IMAGE, "--all-nodes", "--export", "save")
    assert all(r["status"] == "ok" for r in results.values()), results
    return f"docker.io/{SOCAT_IMAGE}"


@pytest.fixture(scope="session")
def tiny(cluster: Cluster, engine: docker.DockerClient) -> str:
    """A small busybox image built for this session (not yet on the nodes)."""
    build_image(engine, "nodeload-cluster/tiny:1", "hello from tiny")
    return "nodeload-cluster/tiny:1"


def repo_path() -> Path:
    """The checkout (for the chart)."""
    return Path(__file__).resolve().parents[2]
