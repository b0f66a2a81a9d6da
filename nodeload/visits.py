"""One short containerd session per node, a few nodes at a time: what ``nodeload gc``,
``nodeload images`` and ``nodeload rm`` do on each node runs inside :func:`each_node`.

Each node is connected afresh (or through a session's kept connection), worked on, and closed;
what goes wrong on one node is that node's error, in words, and the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from nodeload.containerd.client import rpc_error
from nodeload.containerd.connect import ContainerdConnection, connect_containerd
from nodeload.errors import NodeError, NodeloadError
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import NullProgress
from nodeload.session import Session, transport_for
from nodeload.transports.bridge import NoRelay
from nodeload.transports.ssh_connect import SSHOptions

Work = Callable[[NodeSpec, ContainerdConnection], Awaitable[None]]


async def each_node(
    nodes: Sequence[NodeSpec],
    work: Work,
    *,
    what: str,
    ssh: SSHOptions,
    socket: str | None,
    timeout: float,
    parallel: int,
    session: Session | None = None,
    without_relay: str = "",
) -> list[str | None]:
    """Run ``work`` on every node's containerd, ``parallel`` nodes at once; per node (in order)
    None, or why it failed. ``what`` names the work in gRPC errors ("listing images");
    ``without_relay`` is added when the node offers no stream to its socket (only ctr import)."""
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(node: NodeSpec) -> str | None:
        async with gate:
            try:
                await _visit(node, work, ssh, socket, timeout, session, without_relay)
            except NodeloadError as err:
                return str(err)
            except grpc.aio.AioRpcError as err:
                return str(rpc_error(what, err))
            return None

    return list(await asyncio.gather(*(one(node) for node in nodes)))


async def _visit(
    node: NodeSpec,
    work: Work,
    ssh: SSHOptions,
    socket: str | None,
    timeout: float,
    session: Session | None,
    without_relay: str,
) -> None:
    transport = transport_for(node, ssh, session)
    if transport is None:
        raise NodeError(node.problem or "nodeload cannot reach this node")
    opened = connect_containerd(transport, node, NullProgress(), socket=socket, timeout=timeout)
    try:
        async with transport, opened as connection:
            await work(node, connection)
    except NoRelay as err:
        raise NodeError(f"{err}{': ' if without_relay else ''}{without_relay}") from err
    finally:
        if session is not None:  # a session's kept connection is lent to one call at a time
            session.give_back([transport])
