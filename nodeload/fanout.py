"""Fan-out: push images to many nodes, one session per node, every image through it.

Orchestration only. How a node is reached is its transport's business, what is
written is its target's; both turn their own errors into :class:`NodeError`s.
Images are prepared (opened, exported, compressed) once each, in a background
thread, while the nodes are being connected to; the layers a source finishes first
go to the nodes that can take them early (see :mod:`nodeload.early`). One node's
failure is recorded in its results and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nodeload.early import EarlyLayers, LayerListener
from nodeload.errors import (
    ConnectionLost,
    ContainerdTimeout,
    InternalError,
    LocalError,
    NodeError,
    NodeloadError,
    NodeUnreachable,
)
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import ProgressSink
from nodeload.report import NodeResult
from nodeload.targets.base import CRI_NAMESPACE, PreparedImage, Target, TargetOpener
from nodeload.transports.base import Traffic, Transport

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8
# After these, the node's session is gone: its remaining images fail with the same cause.
_SESSION_LOST = (ConnectionLost, ContainerdTimeout, NodeUnreachable)


@dataclass(frozen=True)
class ImageJob:
    """One image of the run: how the user wrote it, and how to open it (blocking; it tells the
    listener of layers ready early), and the namespace it goes to unless a node says otherwise."""

    label: str
    prepare: Callable[[LayerListener], PreparedImage]
    namespace: str = CRI_NAMESPACE


@runtime_checkable
class EarlyReceiver(Protocol):
    """A target that can take layers of an image still being prepared."""

    def receiving(
        self, early: EarlyLayers, namespace: str, result: NodeResult
    ) -> AbstractAsyncContextManager[None]:
        """Send ``early``'s layers the node lacks while the block runs; ``push`` counts them as sent."""
        ...


@dataclass(frozen=True)
class NodeJob:
    """One node of the run and the transport that reaches it (None: ``node.problem`` says why not)."""

    node: NodeSpec
    transport: Transport | None


async def push_all(
    images: Sequence[ImageJob],
    nodes: Sequence[NodeJob],
    open_target: TargetOpener,
    progress: ProgressSink,
    *,
    parallel: int = DEFAULT_PARALLEL,
) -> list[NodeResult]:
    """Push every image to every node; one result per (image, node), image by image.

    At most ``parallel`` nodes are worked on at once. An image that cannot be
    prepared fails on every node with its error; the other images go on.
    """
    early = [EarlyLayers() for _ in images]
    ready = _prepare_in_background(images, early)
    gate = asyncio.Semaphore(max(1, parallel))
    try:
        per_node = await asyncio.gather(
            *(_push_node(job, images, ready, early, open_target, progress, gate) for job in nodes)
        )
    finally:
        for future in ready:
            future.cancel()  # nobody waits any more (an error, or Ctrl-C)
    return [per_node[n][i] for i in range(len(images)) for n in range(len(nodes))]


async def _push_node(
    job: NodeJob,
    images: Sequence[ImageJob],
    ready: Sequence[asyncio.Future[PreparedImage]],
    early: Sequence[EarlyLayers],
    open_target: TargetOpener,
    progress: ProgressSink,
    gate: asyncio.Semaphore,
) -> list[NodeResult]:
    """One node's session: connect, push each image in turn, report."""
    results = [NodeResult(node=job.node.name, image=image.label) for image in images]
    loop = asyncio.get_running_loop()
    async with gate:
        started = loop.time()  # the first image's time and traffic include connecting
        try:
            transport = job.transport
            if transport is None:
                raise NodeError(job.node.problem or "nodeload cannot reach this node")
            async with transport, open_target(transport, job.node, progress) as target:
                results[0].timings["connect"] = round(loop.time() - started, 4)
                since: Traffic | None = None
                for image, result, prepared, layers in zip(images, results, ready, early, strict=True):
                    namespace = job.node.namespace or image.namespace
                    pushing = _Pushing(target, transport, job.node, namespace, prepared, layers)
                    await pushing.run(result, started, since)
                    if isinstance(result.cause, _SESSION_LOST):
                        break
                    started, since = loop.time(), transport.traffic()
        except BaseException as err:
            if not isinstance(err, Exception):  # Ctrl-C, cancellation: not a node failure
                raise
            cause = _as_node_error(job.node, err)
            for result in results:
                if result.status == "pending":
                    result.fail(cause, round(loop.time() - started, 3))
        lost = next((r.cause for r in results if isinstance(r.cause, _SESSION_LOST)), None)
        for result in results:  # images after a lost session were never tried
            if result.status == "pending" and lost is not None:
                result.fail(lost)
    return results


@dataclass(frozen=True)
class _Pushing:
    """One image to one node, through an open target."""

    target: Target
    transport: Transport
    node: NodeSpec
    namespace: str
    prepared: asyncio.Future[PreparedImage]
    early: EarlyLayers

    async def run(self, result: NodeResult, started: float, since: Traffic | None) -> None:
        """Push; failures land in ``result``.

        Time and traffic count from ``started`` and ``since`` (None: the connection's start).
        """
        loop = asyncio.get_running_loop()
        try:
            if isinstance(self.target, EarlyReceiver) and not self.prepared.done():
                async with self.target.receiving(self.early, self.namespace, result):
                    await self._push(result)
            else:
                await self._push(result)
            result.status = "ok"
        except Exception as err:
            result.fail(_as_node_error(self.node, err))
        finally:
            result.seconds = round(loop.time() - started, 3)
            _count_traffic(self.transport, result, since)

    async def _push(self, result: NodeResult) -> None:
        image = await asyncio.shield(self.prepared)
        options = dataclasses.replace(image.options, namespace=self.namespace)
        result.export = image.export
        await self.target.push(image, options, result)


def _count_traffic(transport: Transport, result: NodeResult, before: Traffic | None) -> None:
    after = transport.traffic()
    if after is not None:
        result.wire_bytes_sent = after.sent - (before.sent if before else 0)
        result.wire_bytes_received = after.received - (before.received if before else 0)


def _as_node_error(node: NodeSpec, err: BaseException) -> NodeloadError:
    """Errors as the user should read them; unexpected ones are logged for ``--debug``."""
    if isinstance(err, NodeloadError):
        return err
    log.debug("%s failed", node.name, exc_info=err)
    if isinstance(err, OSError):  # the OS refused something here, not on the node
        return LocalError(f"local error: {err}")
    return InternalError(f"internal error: {type(err).__name__}: {err} (--debug shows where)")


def _prepare_in_background(
    images: Sequence[ImageJob], early: Sequence[EarlyLayers]
) -> list[asyncio.Future[PreparedImage]]:
    """Prepare the images one after another in a daemon thread; a future for each.

    A daemon thread, so that Ctrl-C is not held up by a ``docker save`` (asyncio's default
    executor would be joined at exit). One thread: two exports at once would only compete
    for the same disk and cores. What a source writes to its cache is written atomically,
    so abandoning it midway is safe.
    """
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[PreparedImage]] = [loop.create_future() for _ in images]

    def settle(future: asyncio.Future[PreparedImage], outcome: PreparedImage | BaseException) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def run() -> None:
        for image, future, layers in zip(images, futures, early, strict=True):
            try:
                outcome: PreparedImage | BaseException = image.prepare(layers)
            except BaseException as err:  # handed over to the awaiting coroutines
                outcome = err
            layers.close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(settle, future, outcome)

    threading.Thread(target=run, name="nodeload-prepare", daemon=True).start()
    for future in futures:  # a failure nobody awaited must not be logged as "never retrieved"
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return futures
