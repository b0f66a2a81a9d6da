"""A session: what outlives one call of the library for its caller, and how a node is reached.

The caller makes it and passes it on (kr8s's ``Api`` is the model): the command line makes one
per command, a ``--persist`` session one for its whole life (its event loop and the nodes' SSH
connections stay between pushes), the pytest plugin one per test session. Nothing here is
module-global: two sessions in one process do not see each other's connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Iterable
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

    def __init__(self, *, keep_connections: bool = False, shared: bool = False) -> None:
        """A loop of its own; SSH connections are kept only with ``keep_connections``.

        ``shared``: several threads run calls at once (a persistent session's pushes): the loop
        runs in a thread of its own, and :meth:`interrupt` stops one thread's call.
        """
        self.keep_connections = keep_connections
        self._runner = asyncio.Runner()
        # Kept connections, several per node when calls run at once: each call has its own, so
        # that its traffic counters count its bytes alone. Those lent out are in ``_lent``.
        self._kept: dict[tuple[NodeSpec, SSHOptions], list[SSHTransport]] = {}
        self._lent: set[int] = set()
        # The containerd leases held by the session's pushes at this moment: a push sweeping the
        # leases of runs that are gone spares these (another push of the session is using them).
        self.leases: set[str] = set()
        # Docker engines (by API address) known to reach our loopback endpoint: asked once.
        self.engines_reaching_loopback: set[str] = set()
        self._loop_thread: threading.Thread | None = None
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}  # thread id -> its call
        self._interrupted: set[int] = set()
        self._guard = threading.Lock()
        if shared:
            loop = self._runner.get_loop()
            self._loop_thread = threading.Thread(
                target=loop.run_forever, name="nodeload-session", daemon=True
            )
            self._loop_thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to completion on the session's loop (where its connections live).

        Raises:
            KeyboardInterrupt: the call was interrupted (Ctrl-C, or :meth:`interrupt`).
        """
        if self._loop_thread is None:
            return self._runner.run(coroutine)
        caller = threading.get_ident()
        with self._guard:
            if caller in self._interrupted:
                coroutine.close()
                raise KeyboardInterrupt
            call = asyncio.run_coroutine_threadsafe(coroutine, self._runner.get_loop())
            self._calls[caller] = call
        try:
            return call.result()
        except concurrent.futures.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            with self._guard:
                self._calls.pop(caller, None)

    def interrupt(self, thread: int) -> None:
        """Interrupt the call the thread ``thread`` runs, as Ctrl-C would, and any it makes after
        (until :meth:`forgive`). For a ``shared`` session."""
        with self._guard:
            self._interrupted.add(thread)
            call = self._calls.get(thread)
        if call is not None:
            call.cancel()  # cancels its task on the loop: what it holds is let go as on Ctrl-C

    def forgive(self, thread: int) -> None:
        """Let the thread ``thread`` run calls again (it starts on new work)."""
        with self._guard:
            self._interrupted.discard(thread)

    def ssh_transport(self, node: NodeSpec, ssh: SSHOptions) -> SSHTransport:
        """An SSH transport to ``node``: a kept one not lent out, if it keeps connections (then
        :meth:`give_back` it). Called on the session's loop."""
        if not self.keep_connections:
            return SSHTransport(node, ssh)
        kept = self._kept.setdefault((node, ssh), [])
        transport = next((t for t in kept if id(t) not in self._lent), None)
        if transport is None:
            transport = SSHTransport(node, ssh)
            transport.keep_open = True
            kept.append(transport)
        self._lent.add(id(transport))
        return transport

    def give_back(self, transports: Iterable[Transport | None]) -> None:
        """The call that had these transports is done with them: the next may use them."""
        for transport in transports:
            self._lent.discard(id(transport))

    def tidy(self) -> None:
        """Forget kept connections that are not open (dropped, or never opened) and not lent out:
        the next call to such a node connects again."""
        for key, kept in list(self._kept.items()):
            kept[:] = [t for t in kept if t.is_open or id(t) in self._lent]
            if not kept:
                del self._kept[key]

    def close(self) -> None:
        """Close every kept connection (all at once, for at most ``_CLOSE_SECONDS``), then the loop."""
        kept = [t for transports in self._kept.values() for t in transports]

        async def close_all() -> None:
            closing = asyncio.gather(*(t.close() for t in kept), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing, _CLOSE_SECONDS)

        try:
            if kept:
                self.run(close_all())
        finally:
            self._kept.clear()
            if self._loop_thread is not None:
                loop = self._runner.get_loop()
                loop.call_soon_threadsafe(loop.stop)
                self._loop_thread.join()
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
