"""A real Kubernetes for the sandbox: kube-apiserver, kube-controller-manager, kube-scheduler and
kubelet built once from Debian's source package, etcd from Debian, run on this machine.

``Cluster(nodes=2)`` runs the control plane as processes bound to a private Docker network and
kubelet in sandbox node containers (containerd with CRI), so tests can push with nodeload and
have kubelet start pods from what was pushed. ``nodeload sandbox cluster up|down`` does the same
from the command line; the pytest plugin's ``nodeload_cluster`` fixture for tests.
"""

from nodeload.sandbox.k8s.build import (
    KUBERNETES_VERSION,
    Binaries,
    binaries_dir,
    build_running,
    cached_binaries,
    ensure_binaries,
)
from nodeload.sandbox.k8s.cluster import Cluster, find_cluster, iter_clusters, sweep_clusters, teardown
from nodeload.sandbox.k8s.node import PAUSE_IMAGE, KubeNode

__all__ = [
    "KUBERNETES_VERSION",
    "PAUSE_IMAGE",
    "Binaries",
    "Cluster",
    "KubeNode",
    "binaries_dir",
    "build_running",
    "cached_binaries",
    "ensure_binaries",
    "find_cluster",
    "iter_clusters",
    "sweep_clusters",
    "teardown",
]
