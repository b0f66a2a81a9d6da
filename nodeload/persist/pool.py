"""The state a persistent session keeps between pushes: one event loop, the nodes' SSH connections.

Outside a persistent session (every ordinary run) nothing here is active: :func:`run` is
``asyncio.run`` and :func:`pooled` returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from nodeload.nodes.spec import NodeSpec
    from nodeload.transports.ssh import SSHOptions, SSHTransport

T = TypeVar("T")

# Closing waits no longer than this for the nodes (one that stopped answering would hold it).
_CLOSE_SECONDS = 10.0


class SessionPool:
    """One event loop for every push of the session, and an SSH transport per (node, options)
    kept open on it between pushes (reconnected when its connection dropped)."""

    def __init__(self) -> None:
        """A loop of its own; transports are made on first use."""
        self.runner = asyncio.Runner()
        self._transports: dict[tuple[NodeSpec, SSHOptions], SSHTransport] = {}

    def transport(self, node: NodeSpec, options: SSHOptions) -> SSHTransport:
        """The session's transport for ``node`` reached with ``options``."""
        from nodeload.transports.ssh import SSHTransport

        key = (node, options)
        if key not in self._transports:
            transport = SSHTransport(node, options)
            transport.keep_open = True
            self._transports[key] = transport
        return self._transports[key]

    def tidy(self) -> None:
        """Forget the transports whose connection is not open (dropped, or never opened) after a push:
        a later push to such a node connects again."""
        for key in [k for k, t in self._transports.items() if not t.is_open]:
            del self._transports[key]

    def close(self) -> None:
        """Close every connection (all at once, for at most ``_CLOSE_SECONDS``), then the loop."""

        async def close_all() -> None:
            closing = asyncio.gather(*(t.close() for t in self._transports.values()), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing, _CLOSE_SECONDS)

        try:
            if self._transports:
                self.runner.run(close_all())
        finally:
            self._transports.clear()
            self.runner.close()


_active: SessionPool | None = None


def activate(pool: SessionPool | None) -> None:
    """Make ``pool`` the process's session (None: back to ordinary runs)."""
    global _active
    _active = pool


def pooled(node: NodeSpec, options: SSHOptions) -> SSHTransport | None:
    """The persistent session's transport for ``node``, or None outside a session."""
    return _active.transport(node, options) if _active is not None else None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion: on the session's loop in a persistent session (where its
    connections live), else in a loop of its own, as ``asyncio.run``."""
    if _active is None:
        return asyncio.run(coroutine)
    return _active.runner.run(coroutine)
