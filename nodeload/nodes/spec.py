"""The plain description of one target node that every node source yields.

A node source (the ``--node`` list, a kubeconfig, an Ansible inventory, kind/k3d
containers) only says *what* the node is and how it may be reached; turning a
description into a connection is :func:`nodeload.session.transport_for`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nodeload.platforms import Platform

# How a node is reached: over SSH, as a local Docker container (kind/k3d), through an
# agent pod behind the Kubernetes API, or on this very machine.
Reach = Literal["ssh", "docker", "agent", "local"]
# Where nodeload-agent pods live unless told otherwise (charts/nodeload-agent's namespace).
DEFAULT_AGENT_NAMESPACE = "nodeload"


@dataclass(frozen=True)
class KubeAccess:
    """How to reach a node's agent pod through the Kubernetes API: the kubeconfig in use.

    Attributes:
        kubeconfig: The kubeconfig files, merged as kubectl merges them.
        context: The context in use.
        user: Its user, for messages.
        server: Its API server, for messages.
        agent_namespace: Where the nodeload-agent pods are.
        instead_of_ssh: Why the agent is used rather than SSH, when it was not asked for
            (the node reports no SSH address), for messages.
    """

    kubeconfig: tuple[Path, ...]
    context: str
    user: str
    server: str
    agent_namespace: str = DEFAULT_AGENT_NAMESPACE
    instead_of_ssh: str | None = None


@dataclass(frozen=True)
class ClusterMirror:
    """The cluster's peer-to-peer registry mirror on one node, as the Kubernetes API reports it:
    the Spegel pod scheduled there.

    Attributes:
        pod: ``NAMESPACE/NAME`` of that pod, for messages.
        ready: Whether the pod is ready (serving its node's content and the node's pulls).
        registries: The registry hosts it mirrors (``docker.io``, ``ghcr.io``...); None: every one.
    """

    pod: str
    ready: bool
    registries: frozenset[str] | None = None

    def serves(self, host: str) -> bool:
        """Whether pulls of registry ``host`` go through this mirror."""
        return self.registries is None or host in self.registries


@dataclass(frozen=True)
class NodeSpec:
    """One node to push to.

    Attributes:
        name: How reports and progress name the node (the ``--node`` text, the Kubernetes
            node name, the inventory host name, the container name).
        address: SSH host: an IP, a DNS name or an ``~/.ssh/config`` alias. None when the
            node has no SSH address (reached another way).
        user: SSH login (None: the ssh config's, else the local user).
        port: SSH port (None: the ssh config's, else 22).
        identity: An SSH private key for this node, in addition to the agent and config keys.
        sockets: containerd sockets to try first, in order (e.g. k3s's for a k3s node).
        namespace: containerd namespace for this node, overriding the run's.
        platform: The node's platform when the source knows it (kubelet reports it).
        become: Whether ``sudo -n`` may be used to reach the socket (ansible_become).
        reach: How the node is reached.
        container: The Docker container (id or name) of a ``docker`` node.
        jump: An SSH jump host, ``[USER@]HOST[:PORT]`` (ProxyJump).
        runtime: The container runtime the source reported, e.g. ``containerd://1.7.2``.
        kube: For an ``agent`` node: the Kubernetes API its agent pod is reached through.
        mirror: The cluster's peer-to-peer mirror on this node (Spegel), when the Kubernetes API
            was asked; None: not known that way (the node's own mirror configuration tells).
        problem: Why nodeload cannot push to this node, known before connecting (a runtime
            other than containerd, no address of the requested type): its results fail with it.
    """

    name: str
    address: str | None = None
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    sockets: tuple[str, ...] = ()
    namespace: str | None = None
    platform: Platform | None = None
    become: bool = False
    reach: Reach = "ssh"
    container: str | None = None
    jump: str | None = None
    runtime: str | None = None
    kube: KubeAccess | None = None
    mirror: ClusterMirror | None = None
    problem: str | None = None

    def __str__(self) -> str:
        return self.name
