"""Nodes that are containers of the local Docker engine: kind and k3d clusters.

kind labels its node containers ``io.x-k8s.kind.cluster=NAME`` (role in
``io.x-k8s.kind.role``); k3d labels them ``k3d.cluster=NAME`` with ``k3d.role`` ``server``
or ``agent``, and runs a load balancer and maybe a registry beside them that are not nodes.
A node's Kubernetes name is its container's name (kind) or hostname (k3d).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import docker
import docker.errors

from nodeload.dockerapi import engine_client
from nodeload.errors import NodeSourceError
from nodeload.nodes.spec import NodeSpec

KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
K3D_CLUSTER_LABEL = "k3d.cluster"
K3D_ROLE_LABEL = "k3d.role"
K3D_NODE_ROLES = ("server", "agent")
K3S_SOCKET = "/run/k3s/containerd/containerd.sock"


def kind_nodes(cluster: str, client: docker.DockerClient | None = None) -> list[NodeSpec]:
    """The node containers of the kind cluster ``cluster``, in name order.

    Raises:
        NodeSourceError: when Docker does not answer or the cluster has no node container.
    """
    found = _containers(client, f"{KIND_CLUSTER_LABEL}={cluster}")
    if not found:
        raise NodeSourceError(f"no kind cluster {cluster!r} in the local Docker engine (kind get clusters)")
    return sorted((_spec(c, c["Names"][0].lstrip("/"), ()) for c in found), key=lambda n: n.name)


def k3d_nodes(cluster: str, client: docker.DockerClient | None = None) -> list[NodeSpec]:
    """The server and agent containers of the k3d cluster ``cluster`` (not its load balancer).

    Raises:
        NodeSourceError: when Docker does not answer or the cluster has no node container.
    """
    found = [
        c
        for c in _containers(client, f"{K3D_CLUSTER_LABEL}={cluster}")
        if c.get("Labels", {}).get(K3D_ROLE_LABEL) in K3D_NODE_ROLES
    ]
    if not found:
        raise NodeSourceError(f"no k3d cluster {cluster!r} in the local Docker engine (k3d cluster list)")
    return sorted((_spec(c, c["Names"][0].lstrip("/"), (K3S_SOCKET,)) for c in found), key=lambda n: n.name)


def reach_by_docker(
    context: str, nodes: Sequence[NodeSpec], client: docker.DockerClient | None = None
) -> list[NodeSpec]:
    """``nodes`` of a ``kind-NAME`` or ``k3d-NAME`` kubeconfig context, reached as their containers.

    Nodes with no matching container (or any other context) are returned unchanged.
    """
    cluster: list[NodeSpec] = []
    try:
        if context.startswith("kind-"):
            cluster = kind_nodes(context.removeprefix("kind-"), client)
        elif context.startswith("k3d-"):
            cluster = k3d_nodes(context.removeprefix("k3d-"), client)
    except NodeSourceError:
        return list(nodes)
    by_name = {spec.name: spec for spec in cluster}  # a node's name is its container's name
    return [_as_container(node, by_name[node.name]) if node.name in by_name else node for node in nodes]


def _as_container(node: NodeSpec, container: NodeSpec) -> NodeSpec:
    return dataclasses.replace(
        node,
        reach="docker",
        container=container.container,
        sockets=tuple(dict.fromkeys((*container.sockets, *node.sockets))),
        problem=None if node.problem and "address" in node.problem else node.problem,
    )


def _containers(client: docker.DockerClient | None, label: str) -> list[dict[str, Any]]:
    try:
        api = (client or engine_client()).api
        found: list[dict[str, Any]] = api.containers(filters={"label": label})
    except docker.errors.DockerException as err:
        raise NodeSourceError(f"the local Docker engine did not answer: {err}") from err
    return found


def _spec(container: dict[str, Any], name: str, sockets: tuple[str, ...]) -> NodeSpec:
    return NodeSpec(name=name, reach="docker", container=str(container["Id"]), sockets=sockets)
