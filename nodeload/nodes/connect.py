"""From a node description to the transport that reaches it."""

from __future__ import annotations

from nodeload.errors import UsageError
from nodeload.nodes.spec import NodeSpec
from nodeload.persist.pool import pooled
from nodeload.transports.base import Transport
from nodeload.transports.local import LocalTransport
from nodeload.transports.ssh import SSHOptions, SSHTransport


def transport_for(node: NodeSpec, ssh: SSHOptions) -> Transport | None:
    """The transport for ``node``, by how it is reached (None for a node with a known problem).

    Raises:
        UsageError: when nodeload cannot reach nodes that way.
    """
    if node.problem:  # never connected to: its results fail with the problem
        return None
    if node.reach == "local":
        return LocalTransport(node.name)
    if node.reach == "ssh":
        return pooled(node, ssh) or SSHTransport(node, ssh)
    if node.reach == "docker":
        from nodeload.transports.docker_exec import DockerExecTransport

        return DockerExecTransport(node)
    if node.reach == "agent":
        from nodeload.transports.agent import AgentTransport  # aiohttp and the kubernetes client

        return AgentTransport(node)
    raise UsageError(f"node {node.name}: nodeload cannot reach {node.reach} nodes yet")
