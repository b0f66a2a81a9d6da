"""Push one image to many nodes: connect, find containerd, push, report.

Each node runs independently; one node's failure is recorded in its result
and does not stop the others.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nodeload.containerd.client import ContainerdClient
from nodeload.errors import ContainerdUnavailable, NodeloadError
from nodeload.graph import ImageGraph, resolve
from nodeload.image import ImageSource
from nodeload.platforms import Platform
from nodeload.progress import ProgressSink
from nodeload.report import NodeResult
from nodeload.targets.containerd import ContainerdTarget, TargetOptions
from nodeload.transports.base import Transport

# Where containerd listens on common distributions, in the order we try them.
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
)


@dataclass(frozen=True)
class PushOptions:
    """Per-push settings shared by all nodes."""

    target: TargetOptions
    socket: str | None = None


class GraphCache:
    """Resolve each platform of the source once, whatever the number of nodes."""

    def __init__(self, source: ImageSource) -> None:
        """Cache graphs of ``source``."""
        self._source = source
        self._graphs: dict[Platform, ImageGraph] = {}
        self._lock = threading.Lock()

    def __call__(self, platform: Platform) -> ImageGraph:
        """The graph for ``platform`` (called from worker threads)."""
        key = platform.normalized()
        with self._lock:
            if key not in self._graphs:
                self._graphs[key] = resolve(self._source, key)
            return self._graphs[key]


async def push_all(
    source: ImageSource,
    transports: Sequence[Transport],
    options: PushOptions,
    progress: ProgressSink,
) -> list[NodeResult]:
    """Push ``source`` to every node concurrently; one result per node, in order."""
    graphs = GraphCache(source)
    return list(await asyncio.gather(*(push_node(source, t, options, progress, graphs) for t in transports)))


async def push_node(
    source: ImageSource,
    transport: Transport,
    options: PushOptions,
    progress: ProgressSink,
    graphs: Callable[[Platform], ImageGraph],
) -> NodeResult:
    """Push to one node; failures become a failed result with the error text."""
    result = NodeResult(node=transport.node, namespace=options.target.namespace, name=options.target.name)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with transport:
            progress.message(transport.node, "connecting")
            client = await connect_containerd(transport, options, result)
            try:
                await ContainerdTarget(client, transport.node, progress).push(
                    source, graphs, options.target, result
                )
            finally:
                await client.close()
    except NodeloadError as err:
        result.status, result.error = "failed", str(err)
    finally:
        result.seconds = round(loop.time() - started, 3)
    return result


async def connect_containerd(
    transport: Transport, options: PushOptions, result: NodeResult
) -> ContainerdClient:
    """Find the first containerd socket that exists and answers, and connect to it.

    Raises:
        ContainerdUnavailable: with the reason for each socket tried.
    """
    candidates = [options.socket] if options.socket else list(DEFAULT_SOCKETS)
    reasons: list[str] = []
    for path in candidates:
        if not await transport.can_open(path):
            reasons.append(await transport.why_unusable(path) or f"{path} cannot be opened")
            continue
        client = ContainerdClient(await transport.forward(path), options.target.namespace)
        try:
            await client.version(timeout=10)
        except Exception as err:
            await client.close()
            reasons.append(f"{path} does not answer as containerd ({type(err).__name__})")
            continue
        result.socket = path
        return client
    hint = "" if options.socket else "; name it with --containerd-socket"
    raise ContainerdUnavailable(f"{transport.node}: no usable containerd socket: {'; '.join(reasons)}{hint}")
