"""Spegel's pods, read from the Kubernetes API's pod list (nodeload.nodes.spegel), and what
they mean for a peer's pull (nodeload.mirror.cluster_mirror)."""

from __future__ import annotations

from typing import Any

from nodeload.mirror import Mirror, cluster_mirror
from nodeload.nodes.spec import ClusterMirror
from nodeload.nodes.spegel import spegel_mirrors


def pod(
    name: str, node: str | None, args: list[str], *, ready: bool = True, phase: str = "Running", **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "spegel", **meta},
        "spec": {
            **({"nodeName": node} if node else {}),
            "containers": [{"name": "registry", "args": ["registry", "--log-level=INFO", *args]}],
        },
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_registries_from_every_spelling_of_the_flag() -> None:
    found = spegel_mirrors(
        [
            pod(
                "a",
                "n1",
                ["--registries", "https://docker.io", "https://ghcr.io/", "--resolve-latest-tag=true"],
            ),
            pod("b", "n2", ["--mirrored-registries", "https://quay.io", "--containerd-namespace=k8s.io"]),
            pod("c", "n3", ["--registries=https://docker.io,registry.k8s.io"]),
            pod("d", "n4", ["--containerd-sock=/run/containerd/containerd.sock"]),  # none: every registry
        ]
    )
    assert found["n1"].registries == {"docker.io", "ghcr.io"}
    assert found["n2"].registries == {"quay.io"}
    assert found["n3"].registries == {"docker.io", "registry.k8s.io"}
    assert found["n4"].registries is None and found["n4"].serves("anything.example")
    assert found["n1"].pod == "spegel/a" and not found["n1"].serves("quay.io")


def test_readiness_and_pods_that_do_not_count() -> None:
    found = spegel_mirrors(
        [
            pod("old", "n1", [], ready=False),
            pod("new", "n1", []),  # a rolling update: the ready one wins
            pod("pending", "n2", [], phase="Pending"),
            pod("going", "n3", [], deletionTimestamp="2026-01-01T00:00:00Z"),
            pod("unscheduled", None, []),
            {"metadata": "not a mapping", "spec": []},
        ]
    )
    assert found["n1"] == ClusterMirror("spegel/new", True, None)
    assert not found["n2"].ready
    assert set(found) == {"n1", "n2"}


def test_what_a_peer_pulls_through() -> None:
    mirror = ClusterMirror("spegel/a", True, frozenset({"docker.io"}))
    assert cluster_mirror(mirror, "docker.io") == Mirror(
        "docker.io", "Spegel (spegel/a)", "the Kubernetes API"
    )
    other = cluster_mirror(mirror, "registry.example:5000")
    assert other == (
        "Spegel (spegel/a) mirrors docker.io, not registry.example:5000; "
        "name the image under one of those with StoreOptions.name for the nodes to pull it from their peers"
    )
    unready = cluster_mirror(ClusterMirror("spegel/b", False), "docker.io")
    assert unready == "Spegel's pod on this node (spegel/b) is not ready"
