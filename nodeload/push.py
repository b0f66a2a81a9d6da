"""Push one image to many nodes: connect, find containerd, push, report.

Each node runs independently; one node's failure is recorded in its result
and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncssh
import grpc

from nodeload.containerd.client import DEFAULT_TIMEOUT, ContainerdClient, rpc_error
from nodeload.errors import ContainerdUnavailable, NodeloadError
from nodeload.graph import ImageGraph, resolve
from nodeload.image import ImageSource
from nodeload.platforms import Platform
from nodeload.progress import ProgressSink
from nodeload.report import NodeResult
from nodeload.targets.containerd import ContainerdTarget, TargetOptions
from nodeload.transports.base import Transport

log = logging.getLogger(__name__)

# Where containerd listens on common distributions, in the order we try them.
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
)


@dataclass(frozen=True)
class Prepared:
    """The opened source and the per-push settings that depend on it (e.g. its name)."""

    source: ImageSource
    target: TargetOptions


Preparer = Callable[[], Prepared]


class GraphCache:
    """Resolve each platform of the source once, whatever the number of nodes."""

    def __init__(self) -> None:
        """An empty cache."""
        self._graphs: dict[Platform, ImageGraph] = {}
        self._lock = threading.Lock()

    def resolver(self, source: ImageSource) -> Callable[[Platform], ImageGraph]:
        """A function giving the graph of ``source`` for a platform (called from worker threads)."""

        def resolve_once(platform: Platform) -> ImageGraph:
            key = platform.normalized()
            with self._lock:
                if key not in self._graphs:
                    self._graphs[key] = resolve(source, key)
                return self._graphs[key]

        return resolve_once


async def push_all(
    prepare: Preparer,
    transports: Sequence[Transport],
    progress: ProgressSink,
    *,
    socket: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[NodeResult]:
    """Push to every node concurrently; one result per node, in order.

    ``prepare`` (opening the source: a ``docker save`` and compression, maybe)
    runs in a thread while the nodes are being connected to, so neither waits
    for the other. If it fails, the whole push fails with its error.
    """
    ready = _in_daemon_thread(prepare)
    graphs = GraphCache()
    nodes = [
        asyncio.ensure_future(push_node(ready, t, progress, graphs, socket, timeout)) for t in transports
    ]
    try:
        await ready
    except BaseException:
        for node in nodes:
            node.cancel()
        await asyncio.gather(*nodes, return_exceptions=True)
        raise
    return list(await asyncio.gather(*nodes))


async def push_node(
    ready: asyncio.Future[Prepared],
    transport: Transport,
    progress: ProgressSink,
    graphs: GraphCache,
    socket: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> NodeResult:
    """Push to one node; failures become a failed result with the error text."""
    result = NodeResult(node=transport.node)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with transport:
            try:
                progress.message(transport.node, "connecting")
                client = await connect_containerd(transport, socket, result, timeout)
                try:
                    info = await client.node_info()
                    progress.message(transport.node, "waiting for the image")
                    prepared = await asyncio.shield(ready)
                    result.namespace, result.name = prepared.target.namespace, prepared.target.name
                    client.namespace = prepared.target.namespace
                    await ContainerdTarget(client, transport.node, progress).push(
                        prepared.source, graphs.resolver(prepared.source), prepared.target, result, info
                    )
                finally:
                    await client.close()
            finally:
                _record_traffic(transport, result)
    except NodeloadError as err:
        result.status, result.error = "failed", str(err)
    except grpc.aio.AioRpcError as err:  # containerd said no, or the tunnel broke mid-call
        result.status, result.error = "failed", str(rpc_error("a request", err))
    except (asyncssh.Error, ConnectionError) as err:  # the SSH connection died
        result.status, result.error = "failed", f"connection to the node lost: {err}"
    except OSError as err:  # anything else the OS refused happened here, not on the node
        log.debug("%s failed", transport.node, exc_info=True)
        result.status, result.error = "failed", f"local error: {err}"
    except Exception as err:  # a bug, or input nothing above foresaw: this node fails, not the run
        log.debug("%s failed", transport.node, exc_info=True)
        result.status = "failed"
        result.error = f"internal error: {type(err).__name__}: {err} (--debug shows where)"
    finally:
        result.seconds = round(loop.time() - started, 3)
    return result


def _in_daemon_thread(work: Preparer) -> asyncio.Future[Prepared]:
    """Run ``work`` in a daemon thread, so that Ctrl-C is not held up by a ``docker save``.

    (asyncio's default executor would be joined at exit.) What the source writes
    to its cache is written atomically, so abandoning it midway is safe.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Prepared] = loop.create_future()

    def settle(outcome: Prepared | BaseException) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def run() -> None:
        try:
            outcome: Prepared | BaseException = work()
        except BaseException as err:  # handed over to the awaiting coroutine
            outcome = err
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="nodeload-prepare", daemon=True).start()
    return future


def _record_traffic(transport: Transport, result: NodeResult) -> None:
    traffic = transport.traffic()
    if traffic is not None:
        result.wire_bytes_sent, result.wire_bytes_received = traffic.sent, traffic.received


async def connect_containerd(
    transport: Transport, socket: str | None, result: NodeResult, timeout: float = DEFAULT_TIMEOUT
) -> ContainerdClient:
    """Find the first containerd socket that exists and answers, and connect to it.

    Raises:
        ContainerdUnavailable: with the reason for each socket tried.
    """
    candidates = [socket] if socket else list(DEFAULT_SOCKETS)
    reasons: list[str] = []
    for path in candidates:
        if not await transport.can_open(path):
            reasons.append(await transport.why_unusable(path) or f"{path} cannot be opened")
            continue
        client = ContainerdClient(await transport.forward(path), timeout=timeout)
        try:
            await client.version()
        except Exception as err:
            await client.close()
            timed_out = (
                isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            )
            why = f"did not answer within {client.timeout:.0f}s" if timed_out else type(err).__name__
            reasons.append(f"{path} does not answer as containerd ({why})")
            continue
        result.socket = path
        return client
    hint = "" if socket else "; name it with --containerd-socket"
    raise ContainerdUnavailable(f"no usable containerd socket: {'; '.join(reasons)}{hint}")
