"""A session: what outlives one call of the library for its caller, and how a node is reached.

The caller makes it and passes it on (kr8s's ``Api`` is the model): the command line makes one
per command, a ``--persist`` session one for its whole life (its event loop and the nodes' SSH
connections stay between pushes), the pytest plugin one per test session. Nothing here is
module-global: two sessions in one process do not see each other's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from nodeload.errors import UsageError
from nodeload.nodes.spec import NodeSpec
from nodeload.transports.base import Transport
from nodeload.transports.local import LocalTransport
from nodeload.transports.ssh import SSHOptions, SSHTransport

T = TypeVar("T")

# Closing waits no longer than this for the nodes (one that stopped answering would hold it).
_CLOSE_SECONDS = 10.0


class Session:
    """An event loop to run the library's calls on and, if asked, the nodes' SSH connections kept
    open between calls (reconnected when one dropped).

    Example:
        >>> with Session(keep_connections=True) as session:
        ...     nodeload.push("myapp:dev", ["node-1"], session=session)
        ...     nodeload.push("myapp:dev", ["node-1"], session=session)  # the same connection
    """

    def __init__(self, *, keep_connections: bool = False) -> None:
        """A loop of its own; SSH connections are kept only with ``keep_connections``."""
        self.keep_connections = keep_connections
        self._runner = asyncio.Runner()
        self._kept: dict[tuple[NodeSpec, SSHOptions], SSHTransport] = {}
        # The containerd leases held by the session's pushes at this moment: a push sweeping the
        # leases of runs that are gone spares these (another push of the session is using them).
        self.leases: set[str] = set()
        # Docker engines (by API address) known to reach our loopback endpoint: asked once.
        self.engines_reaching_loopback: set[str] = set()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to completion on the session's loop (where its connections live)."""
        return self._runner.run(coroutine)

    def ssh_transport(self, node: NodeSpec, ssh: SSHOptions) -> SSHTransport:
        """An SSH transport to ``node``: the session's kept one, if it keeps connections."""
        if not self.keep_connections:
            return SSHTransport(node, ssh)
        key = (node, ssh)
        if key not in self._kept:
            transport = SSHTransport(node, ssh)
            transport.keep_open = True
            self._kept[key] = transport
        return self._kept[key]

    def tidy(self) -> None:
        """Forget kept connections that are not open (dropped, or never opened): the next call
        to such a node connects again."""
        for key in [k for k, t in self._kept.items() if not t.is_open]:
            del self._kept[key]

    def close(self) -> None:
        """Close every kept connection (all at once, for at most ``_CLOSE_SECONDS``), then the loop."""

        async def close_all() -> None:
            closing = asyncio.gather(*(t.close() for t in self._kept.values()), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing, _CLOSE_SECONDS)

        try:
            if self._kept:
                self._runner.run(close_all())
        finally:
            self._kept.clear()
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def transport_for(node: NodeSpec, ssh: SSHOptions, session: Session | None = None) -> Transport | None:
    """How ``node`` is reached: its transport (a kept one of ``session``'s for SSH, if it keeps
    them). None for a node with a known problem: its results fail with it, never connected to.

    Raises:
        UsageError: when nodeload cannot reach nodes that way.
    """
    if node.problem:
        return None
    if node.reach == "local":
        return LocalTransport(node.name)
    if node.reach == "ssh":
        return session.ssh_transport(node, ssh) if session is not None else SSHTransport(node, ssh)
    if node.reach == "docker":
        from nodeload.transports.docker_exec import DockerExecTransport  # the Docker SDK

        return DockerExecTransport(node)
    if node.reach == "agent":
        from nodeload.transports.agent import AgentTransport  # aiohttp and the kubernetes client

        return AgentTransport(node)
    raise UsageError(f"node {node.name}: nodeload cannot reach {node.reach} nodes yet")


def run(session: Session | None, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on ``session``'s loop, or on a loop of its own (as ``asyncio.run``)."""
    if session is not None:
        return session.run(coroutine)
    with Session() as own:
        return own.run(coroutine)
