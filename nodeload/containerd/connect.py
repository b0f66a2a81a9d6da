"""A node's containerd, reached through a transport: the one place a connection to it is opened.

``push`` (every strategy but ``ctr import``), ``nodeload serve``, ``nodeload gc`` and ``nodeload
nodes --check`` open their sessions here: the first socket that answers as containerd, and what
containerd says of itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from nodeload.addresses import node_path_problem, refused
from nodeload.containerd.client import DEFAULT_TIMEOUT, ContainerdClient, NodeInfo, rpc_error
from nodeload.errors import ContainerdUnavailable
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import ProgressSink
from nodeload.transports.base import Transport
from nodeload.transports.bridge import NoRelay, SocketUnavailable
from nodeload.wording import setting

# Where containerd listens on common distributions, in the order they are tried.
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
)


@dataclass(frozen=True)
class ContainerdConnection:
    """An open connection to a node's containerd.

    Attributes:
        client: The gRPC client.
        info: What containerd says of itself (version, platform, snapshotters, CRI).
        socket: The socket that answered.
        reach: How it is reached (``ssh-forward``, ``ssh-exec:socat``...), for reports.
    """

    client: ContainerdClient
    info: NodeInfo
    socket: str
    reach: str


def candidate_sockets(node: NodeSpec, socket: str | None) -> list[str]:
    """The sockets to try, in order: ``socket`` alone when given (``--containerd-socket``), else
    the node's own hints (a k3s node's socket, an inventory's), then the usual places.

    Raises:
        ContainerdUnavailable: a path that cannot be a socket path (every node source checks its
            hints; this is the last line for all of them).
    """
    candidates = [socket] if socket else list(dict.fromkeys((*node.sockets, *DEFAULT_SOCKETS)))
    for path in candidates:
        why = node_path_problem(path)
        if why:
            raise ContainerdUnavailable(refused("the containerd socket", path, why, use="a socket path"))
    return candidates


@asynccontextmanager
async def connect_containerd(
    transport: Transport,
    node: NodeSpec,
    progress: ProgressSink,
    *,
    socket: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    held: set[str] | None = None,
) -> AsyncIterator[ContainerdConnection]:
    """The node's containerd: the first of :func:`candidate_sockets` that answers, over ``transport``
    (entered by the caller). The client is closed on leaving. ``held`` lists the leases the
    caller's pushes hold (see :class:`~nodeload.containerd.client.ContainerdClient`).

    Raises:
        NoRelay: nothing can carry a stream to the node's sockets (no forwarding, no relay program).
        ContainerdUnavailable: with the reason for each socket tried.
    """
    candidates = candidate_sockets(node, socket)
    progress.message(node.name, "connecting")
    client, path = await _connect(transport, candidates, timeout, hinted=bool(socket), held=held)
    try:
        try:
            info = await client.node_info()
        except grpc.aio.AioRpcError as err:
            raise rpc_error("asking containerd about itself", err) from err
        yield ContainerdConnection(client, info, path, transport.reach)
    finally:
        await client.close()


async def _connect(
    transport: Transport, candidates: list[str], timeout: float, *, hinted: bool, held: set[str] | None
) -> tuple[ContainerdClient, str]:
    """The first candidate socket that opens and answers as containerd.

    Raises:
        ContainerdUnavailable: with each candidate's reason (NoRelay when no stream can be had).
    """
    reasons: list[str] = []
    no_relay: NoRelay | None = None
    for path in candidates:
        try:
            target = await transport.open_socket(path)
        except NoRelay as err:
            no_relay = err
            reasons.append(str(err))
            continue
        except SocketUnavailable as err:
            reasons.append(str(err))
            continue
        client = ContainerdClient(target, timeout=timeout, held=held)
        try:
            await client.version()
        except Exception as err:
            await client.close()
            code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
            timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED
            why = f"did not answer within {client.timeout:.0f}s" if timed_out else type(err).__name__
            reasons.append(f"{path} does not answer as containerd ({why})")
            continue
        return client, path
    hint = "" if hinted else f"; name it with {setting('socket')}"
    message = f"no usable containerd socket: {'; '.join(reasons)}{hint}"
    raise NoRelay(message) if no_relay is not None else ContainerdUnavailable(message)
