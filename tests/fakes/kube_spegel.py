"""Spegel's DaemonSet pods on :class:`~tests.fakes.kube_api.FakeKubeApi`, as its chart renders them.

What it does, and no more: ``GET /api/v1/pods`` (every namespace) with ``labelSelector``
evaluated here; each pod carries the chart's labels, its node, its readiness and the ``registry``
container's arguments with the mirrored registries. Users in :attr:`SpegelPods.list_forbidden`
get 403, with kube's wording. No Spegel runs: the tests pair these pods with the sandbox's
registry mirror stand-in (nodeload.sandbox.registry_mirror).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.kube_api import USER, FakeKubeApi, parse_selector, status

NAMESPACE = "spegel"
LABELS = {"app.kubernetes.io/name": "spegel", "app.kubernetes.io/instance": "spegel"}


@dataclass
class SpegelPod:
    """One pod of Spegel's DaemonSet."""

    name: str
    node: str
    ready: bool = True
    registries: Sequence[str] = ("https://docker.io", "https://ghcr.io")  # empty: every registry
    flag: str = "--registries"  # "--mirrored-registries" before Spegel 0.1


class SpegelPods:
    """Spegel pods served by ``api``."""

    def __init__(self, api: FakeKubeApi) -> None:
        """Add the route to ``api`` (before it starts)."""
        self.pods: dict[str, SpegelPod] = {}
        self.list_forbidden: set[str] = set()
        api.app.router.add_get("/api/v1/pods", self._list)

    def add(self, pod: SpegelPod) -> SpegelPod:
        """Run ``pod``."""
        self.pods[pod.name] = pod
        return pod

    @staticmethod
    def _object(pod: SpegelPod) -> dict[str, object]:
        registries = [pod.flag, *pod.registries] if pod.registries else []
        args = ["registry", "--log-level=INFO", "--registry-addr=:5000", *registries]
        args += ["--containerd-sock=/run/containerd/containerd.sock", "--containerd-namespace=k8s.io"]
        ready = "True" if pod.ready else "False"
        container = {"name": "registry", "image": "ghcr.io/spegel-org/spegel:v0.4.0", "args": args}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": NAMESPACE, "labels": dict(LABELS)},
            "spec": {
                "nodeName": pod.node,
                "containers": [container],
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]},
        }

    async def _list(self, request: web.Request) -> web.Response:
        if request[USER] in self.list_forbidden:
            message = (
                f'pods is forbidden: User "{request[USER]}" cannot list resource "pods" in API group "" '
                "at the cluster scope"
            )
            return status(403, "Forbidden", message, kind="pods")
        requirements = parse_selector(request.query.get("labelSelector", ""))
        items = [
            self._object(pod) for pod in self.pods.values() if all(r.matches(LABELS) for r in requirements)
        ]
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
