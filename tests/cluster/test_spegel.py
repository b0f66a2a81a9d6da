"""``--seeds``: Spegel found through a real API server, from real pods carrying Spegel's labels.

Spegel itself cannot be installed here; the pods only look like its DaemonSet's (its chart's
label, a ``registry`` container whose arguments list the registries it mirrors) and sleep. What
is real is what nodeload reads: the API server's pod list in every namespace, and each pod's
readiness as kubelet reports it (node-2's pod fails its readiness probe). Neither node can pull
docker.io through its Spegel, so each is pushed directly, and the report says why, per node.
The peer pulls themselves are tested against a registry mirror stand-in (tests/e2e/test_seeds.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import docker
import pytest
from kubernetes import client

from nodeload.sandbox import build_image
from nodeload.sandbox.k8s import Cluster
from tests.cluster.kube import SLEEP, core, delete_pod, pod, push, wait_running

pytestmark = pytest.mark.e2e

SPEGEL_LABELS = {"app.kubernetes.io/name": "spegel", "app.kubernetes.io/instance": "spegel"}
REGISTRIES = ["registry", "--registries", "https://ghcr.io", "https://quay.io"]


def spegel_pod(node: str, image: str, *, ready: bool) -> client.V1Pod:
    """A pod that looks like Spegel's on ``node`` (mirroring ghcr.io and quay.io), ready or never."""
    return pod(
        f"spegel-{node}",
        node,
        image,
        labels=SPEGEL_LABELS,
        command=SLEEP,
        args=REGISTRIES,
        container="registry",
        ready=ready,
    )


@pytest.fixture()
def spegel(cluster: Cluster, socat: str) -> Iterator[str]:
    """Spegel's namespace: spegel-node-1 ready, spegel-node-2 failing its readiness probe."""
    api = core(cluster)
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="spegel")))
    try:
        api.create_namespaced_pod("spegel", spegel_pod("node-1", socat, ready=True))
        api.create_namespaced_pod("spegel", spegel_pod("node-2", socat, ready=False))
        wait_running(api, "spegel", ["spegel-node-1", "spegel-node-2"])
        _wait_ready(api, "spegel-node-1")
        yield "spegel"
    finally:
        api.delete_namespace("spegel", grace_period_seconds=0)


def test_each_node_s_spegel_pod_decides_how_it_gets_the_image(
    cluster: Cluster, spegel: str, socat: str, engine: docker.DockerClient
) -> None:
    api = core(cluster)
    assert _ready(api, spegel) == {"node-1": True, "node-2": False}  # kubelet ran node-2's probe: it failed

    # node-2's Spegel is not ready: it cannot pull from a peer, so it is pushed to at once; node-1,
    # the only node with a mirror, is the seed.
    build_image(engine, "nodeload-cluster/seeded:1", "hello from a seed")
    results = push(cluster, "nodeload-cluster/seeded:1", "--all-nodes", "--seeds", "1", "--export", "save")
    assert {n: (r["status"], r["delivered_by"]) for n, r in results.items()} == dict.fromkeys(
        cluster.node_names, ("ok", "push")
    )
    assert results["node-1"]["warnings"] == []
    assert results["node-2"]["warnings"] == [
        "Spegel's pod on this node (spegel/spegel-node-2) is not ready: pushed directly"
    ]

    # Both ready now: node-1 (first in the API's order, as much to receive) is the seed; node-2's
    # Spegel mirrors other registries than the image's, so it is pushed to directly too.
    delete_pod(api, "spegel-node-2", spegel)
    _wait_gone(api, "spegel-node-2")
    api.create_namespaced_pod(spegel, spegel_pod("node-2", socat, ready=True))
    _wait_ready(api, "spegel-node-2")
    assert _ready(api, spegel) == {"node-1": True, "node-2": True}
    build_image(engine, "nodeload-cluster/seeded:2", "hello from another seed")
    results = push(cluster, "nodeload-cluster/seeded:2", "--all-nodes", "--seeds", "1", "--export", "save")
    assert {n: (r["status"], r["delivered_by"]) for n, r in results.items()} == dict.fromkeys(
        cluster.node_names, ("ok", "push")
    )
    assert results["node-1"]["warnings"] == []
    (warning,) = results["node-2"]["warnings"]
    assert warning.startswith("Spegel (spegel/spegel-node-2) mirrors ghcr.io, quay.io, not docker.io")
    assert warning.endswith("pushed directly")
    # Read from the API server: a list of pods by Spegel's label, in every namespace.
    selectors = [
        parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector")
        for e in cluster.audit_events()
        if e["objectRef"]["resource"] == "pods" and e["verb"] == "list" and "namespace" not in e["objectRef"]
    ]
    assert ["app.kubernetes.io/name=spegel"] in selectors, selectors


def _ready(api: client.CoreV1Api, namespace: str) -> dict[str, bool]:
    return {
        p.spec.node_name: any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
        for p in api.list_namespaced_pod(namespace).items
    }


def _wait_gone(api: client.CoreV1Api, name: str) -> None:
    for _ in range(100):
        if name not in {p.metadata.name for p in api.list_namespaced_pod("spegel").items}:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} was never deleted")


def _wait_ready(api: client.CoreV1Api, name: str) -> None:
    for _ in range(100):
        conditions = api.read_namespaced_pod(name, "spegel").status.conditions or ()
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} never became Ready")
