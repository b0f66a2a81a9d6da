"""Spegel, the cluster's peer-to-peer registry mirror, as its pods show it in the Kubernetes API.

Spegel runs as a DaemonSet: on every node, a pod serves that node's containerd content to its
peers and takes the node's pulls of the registries it mirrors (it writes containerd's
``hosts.toml`` for each of them). Its chart labels the pods ``app.kubernetes.io/name=spegel``;
the pod's ``registry`` container lists the mirrored registries in its arguments
(``--registries URL...``, ``--mirrored-registries`` in releases before 0.1), none meaning every
registry. Reading that through the API tells, for each node, whether its mirror is up and which
registry hosts it serves, without reading the node's files (which a node reached through its
nodeload-agent pod cannot).

Parsing only: :func:`spegel_mirrors` takes the pod list as the API returns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from nodeload.jsondoc import mapping
from nodeload.nodes.spec import ClusterMirror

# The label Spegel's chart gives its pods (the chart's name, unless overridden).
SPEGEL_SELECTOR = "app.kubernetes.io/name=spegel"
_REGISTRY_FLAGS = ("--registries", "--mirrored-registries")


def spegel_mirrors(pods: Iterable[Mapping[str, Any]]) -> dict[str, ClusterMirror]:
    """The Spegel mirror on each node that runs one, by node name; a ready pod wins over others
    on the same node (a rolling update runs two for a while)."""
    found: dict[str, ClusterMirror] = {}
    for pod in pods:
        metadata, spec = mapping(pod.get("metadata")), mapping(pod.get("spec"))
        node = spec.get("nodeName")
        if not isinstance(node, str) or not node or metadata.get("deletionTimestamp"):
            continue
        mirror = ClusterMirror(
            pod=f"{metadata.get('namespace', '')}/{metadata.get('name', '')}",
            ready=_ready(pod),
            registries=_registries(spec.get("containers")),
        )
        if node not in found or (mirror.ready and not found[node].ready):
            found[node] = mirror
    return found


def _ready(pod: Mapping[str, Any]) -> bool:
    status = mapping(pod.get("status"))
    if status.get("phase") != "Running":
        return False
    conditions = status.get("conditions")
    return any(
        mapping(c).get("type") == "Ready" and mapping(c).get("status") == "True"
        for c in (conditions if isinstance(conditions, list) else ())
    )


def _registries(containers: object) -> frozenset[str] | None:
    """The registry hosts the ``registry`` container mirrors; None for every registry."""
    for container in containers if isinstance(containers, list) else ():
        args = mapping(container).get("args")
        if not isinstance(args, list) or not args or args[0] != "registry":
            continue
        listed = _flag_values([str(a) for a in args[1:]])
        return frozenset(_host(value) for value in listed) or None
    return None


def _flag_values(args: Sequence[str]) -> list[str]:
    """The values of the registries flag: ``--registries A B``, or ``--registries=A,B``."""
    values: list[str] = []
    taking = False
    for arg in args:
        flag, equals, value = arg.partition("=")
        if arg.startswith("-"):
            taking = flag in _REGISTRY_FLAGS and not equals
            if flag in _REGISTRY_FLAGS and equals:
                values += [v for v in value.split(",") if v]
        elif taking:
            values.append(arg)
    return values


def _host(value: str) -> str:
    """``https://docker.io`` -> ``docker.io`` (a bare host stays as it is)."""
    text = value.strip().strip('"')
    return urlsplit(text).netloc if "://" in text else text.rstrip("/")
