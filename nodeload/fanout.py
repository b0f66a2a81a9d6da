"""Fan-out: push images to many nodes, one session per node, every image through it.

Orchestration only. How a node is reached is its transport's business, what is
written is its store's; both turn their own errors into :class:`NodeError`s.
Images are prepared (opened, exported, compressed) once each, one after another,
while the nodes are being connected to; the layers a source finishes first go to
the nodes that can take them early (see :mod:`nodeload.early`). A source may ask
the nodes what they hold before it prepares (see :mod:`nodeload.holdings`): each
node answers once connected. One node's failure is recorded in its results and
does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, runtime_checkable

from nodeload.early import EarlyLayers, LayerListener
from nodeload.errors import (
    ConnectionLost,
    ContainerdTimeout,
    ContainerdUnavailable,
    InternalError,
    LocalError,
    NodeError,
    NodeloadError,
    NodeUnreachable,
)
from nodeload.holdings import Holding, HoldingQuery, NodesView
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import ProgressSink
from nodeload.report import NodeResult, Status
from nodeload.stores.base import (
    CRI_NAMESPACE,
    Delivery,
    ImageStore,
    PeerPull,
    PreparedImage,
    SeedCandidate,
    Seeded,
    StoreOpener,
    WriteOptions,
    Written,
)
from nodeload.tasks import first_error
from nodeload.transports.base import Traffic, Transport
from nodeload.wording import setting

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8
DEFAULT_RETRIES = 3
# After these, the node's session is gone: its remaining images fail with the same cause.
_SESSION_LOST = (ConnectionLost, ContainerdTimeout, NodeUnreachable)
# A session lost this way is worth another: the connection dropped, containerd went away.
_RETRYABLE = (ConnectionLost,)
# While reconnecting, the node or its containerd may not be back yet.
_RETRYABLE_RECONNECT = (ConnectionLost, NodeUnreachable, ContainerdUnavailable)


# How an image is prepared: told where to announce layers ready early, and how to ask the nodes.
Prepare = Callable[[LayerListener, NodesView], Awaitable[PreparedImage]]


@dataclass(frozen=True)
class ImageJob:
    """One image of the run: how the user wrote it, how to prepare it, and the namespace it goes
    to unless a node says otherwise. ``asks_nodes``: its preparation waits for every node's
    answer (see :mod:`nodeload.holdings`), so a node waiting for it gives up its place to let
    the others connect and answer."""

    label: str
    prepare: Prepare
    namespace: str = CRI_NAMESPACE
    asks_nodes: bool = False


@runtime_checkable
class HoldingAnswerer(Protocol):
    """A store that can say what its node holds (see :mod:`nodeload.holdings`)."""

    async def holding(self, query: HoldingQuery, namespace: str) -> Holding:
        """The node's answer to ``query``, for images of ``namespace``."""
        ...


@runtime_checkable
class EarlyReceiver(Protocol):
    """A store that can take layers of an image still being prepared."""

    def receiving(
        self, early: EarlyLayers, namespace: str, written: Written
    ) -> AbstractAsyncContextManager[None]:
        """Send ``early``'s layers the node lacks while the block runs (``written`` counts them)."""
        ...


@dataclass(frozen=True)
class NodeJob:
    """One node of the run and the transport that reaches it (None: ``node.problem`` says why not)."""

    node: NodeSpec
    transport: Transport | None


@dataclass(frozen=True)
class RetryPolicy:
    """What to do when a node's session is lost mid-push (the SSH connection dropped, containerd
    restarted): reconnect up to ``retries`` times, waiting ``backoff`` seconds (doubled each time,
    at most 10), and resume: a new plan finds what arrived, the interrupted blob goes on from the
    node's ingest offset. ``notify`` hears of each retry."""

    retries: int = DEFAULT_RETRIES
    backoff: float = 1.0
    notify: Callable[[str], None] = log.warning

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return min(self.backoff * 2.0 ** (retry - 1), 10.0)


async def push_all(
    images: Sequence[ImageJob],
    nodes: Sequence[NodeJob],
    open_store: StoreOpener,
    progress: ProgressSink,
    *,
    parallel: int = DEFAULT_PARALLEL,
    retry: RetryPolicy | None = None,
    seeds: int = 0,
    mirror_check: bool = True,
) -> list[NodeResult]:
    """Push every image to every node; one result per (image, node), image by image.

    At most ``parallel`` nodes are worked on at once (a node waiting for other nodes does not
    count). An image that cannot be prepared fails on every node with its error; the other
    images go on.

    With ``seeds`` (and more nodes than that), each node's session first finds whether it pulls
    through a mirror (the cluster's peer-to-peer one: Spegel, k3s's embedded registry) and, if
    so, how much of the images it lacks; once every node has said, the ``seeds`` of those with
    the least to receive get the images pushed (ties: selection order), and every other one
    waits for them and pulls from its peers instead, falling back to a push. Nodes without a
    mirror are pushed to at once. ``mirror_check`` False trusts every node to have one.
    """
    early = [EarlyLayers() for _ in images]
    reachable = [n for n, job in enumerate(nodes) if job.transport is not None]
    surveys = [_Survey(reachable) for _ in images]
    ready, preparing = _prepare_in_turn(images, early, surveys)
    gate = asyncio.Semaphore(max(1, parallel))
    policy = retry or RetryPolicy()
    choice = _SeedChoice(seeds, reachable, len(images)) if seeds and len(reachable) > seeds else None
    parts = [_Seeding(choice, n, mirror_check) if choice else None for n in range(len(nodes))]
    runs = [
        _NodeRun(job, n, images, ready, early, surveys, open_store, progress, part)
        for n, (job, part) in enumerate(zip(nodes, parts, strict=True))
    ]
    try:
        done = await asyncio.gather(*(run.run(gate, policy) for run in runs))
    finally:
        preparing.cancel()  # nobody waits any more (an error, or Ctrl-C)
        for future in ready:
            future.cancel()
        # Its cleanup (the engine's endpoint closing) comes before the caller's (the spool the
        # endpoint writes to), or the endpoint would go on serving into removed files.
        with contextlib.suppress(asyncio.CancelledError):
            await preparing
    return [done[n][i] for i in range(len(images)) for n in range(len(nodes))]


class _Survey:
    """One image's question to the nodes (:mod:`nodeload.holdings`), and their answers."""

    def __init__(self, nodes: Sequence[int]) -> None:
        """Expect an answer from each of ``nodes`` (indexes of the run's reachable nodes)."""
        self._waiting = set(nodes)
        self._answers: dict[int, Holding | None] = {}
        self._query: HoldingQuery | None = None
        self._posted, self._answered = asyncio.Event(), asyncio.Event()
        if not self._waiting:
            self._answered.set()

    async def ask(self, query: HoldingQuery) -> list[Holding | None]:
        """See :class:`~nodeload.holdings.NodesView`."""
        self._query = query
        self._posted.set()
        await self._answered.wait()
        return [self._answers[n] for n in sorted(self._answers)]

    async def answer(self, node: int, respond: Callable[[HoldingQuery], Awaitable[Holding | None]]) -> None:
        """Once the question is asked, answer it for ``node`` with ``respond`` (a failure: None)."""
        if node not in self._waiting:
            return
        await self._posted.wait()
        assert self._query is not None
        try:
            holding = await respond(self._query)
        except Exception as err:  # the push itself will say what is wrong with this node
            log.debug("a node could not say what it holds", exc_info=err)
            holding = None
        self._record(node, holding)

    def gone(self, node: int) -> None:
        """``node`` will not answer (its session failed first): it counts as holding nothing."""
        self._record(node, None)

    def _record(self, node: int, holding: Holding | None) -> None:
        if node in self._waiting:
            self._waiting.discard(node)
            self._answers[node] = holding
            if not self._waiting:
                self._answered.set()


def pick_seeds(missing: dict[int, float], count: int) -> set[int]:
    """The ``count`` nodes with the least of the images to receive: those holding the most of
    them first, then those with the fewest bytes to send (ties: selection order)."""
    return set(sorted(missing, key=lambda n: (missing[n], n))[:count])


class _SeedChoice:
    """The seed nodes of a run, chosen once every reachable node has said, from its own first
    session, how much of the images it lacks, or that it pulls through no mirror."""

    def __init__(self, count: int, nodes: Sequence[int], images: int) -> None:
        """Choose ``count`` seeds among ``nodes`` (indexes) for a run of ``images`` images."""
        self._count, self._images = count, images
        self._waiting = set(nodes)
        self._missing: dict[int, float] = {}
        self._decided = asyncio.Event()
        self.seeds: set[int] = set()
        self.seeded: list[Seeded] = []  # per image, once decided: whether the seeds got it

    def report(self, node: int, missing: float | None) -> None:
        """``node`` lacks ``missing`` bytes of the images (infinite: it cannot say); None: it is no
        candidate (it pulls through no mirror, or its session failed first). Once only."""
        if node not in self._waiting:
            return
        self._waiting.discard(node)
        if missing is not None:
            self._missing[node] = missing
        if not self._waiting:
            self.seeds = pick_seeds(self._missing, self._count)
            self.seeded = [Seeded(len(self.seeds)) for _ in range(self._images)]
            self._decided.set()

    def reported(self, node: int) -> bool:
        """Whether ``node`` has said its part."""
        return node not in self._waiting

    async def is_seed(self, node: int) -> bool:
        """Wait for the choice; whether ``node`` is a seed (else it pulls from the seeds)."""
        await self._decided.wait()
        return node in self.seeds


@dataclass(frozen=True)
class _Seeding:
    """One node's part in a run with seeds."""

    choice: _SeedChoice
    node: int  # its index in the run
    check: bool  # read the node's mirror configuration (False: trust that it has one)


@dataclass
class _Outcome:
    """One image on one node, over every session of the run: its report, what the run wrote
    there (the retry bookkeeping), and the error behind a failure."""

    result: NodeResult
    written: Written = dataclasses.field(default_factory=Written)
    cause: NodeloadError | None = None
    started: float | None = None  # when its push began, and the traffic then: kept across sessions
    since: Traffic | None = None

    @property
    def pending(self) -> bool:
        return self.result.status == Status.PENDING

    def fail(self, cause: NodeloadError, seconds: float | None = None) -> None:
        """Record the failure ``cause`` (its text is the report's ``error``)."""
        self.result.status, self.result.error, self.cause = Status.FAILED, str(cause), cause
        if seconds is not None:
            self.result.seconds = seconds

    def retry(self) -> None:
        """Forget a failure that another session will try to overcome."""
        self.result.status, self.result.error, self.cause = Status.PENDING, None, None
        self.result.attempts += 1


@dataclass
class _NodeRun:
    """Every image of the run on one node, over one session or, after losses, several."""

    job: NodeJob
    index: int  # the node's place in the run
    images: Sequence[ImageJob]
    ready: Sequence[asyncio.Future[PreparedImage]]
    early: Sequence[EarlyLayers]
    surveys: Sequence[_Survey]
    open_store: StoreOpener
    progress: ProgressSink
    seeding: _Seeding | None = None  # a run with seeds: the node takes part in choosing them

    def __post_init__(self) -> None:
        self.outcomes = [_Outcome(NodeResult(node=self.job.node.name, image=i.label)) for i in self.images]
        # Once the seeds are chosen: this node's part, a seed (pushed to, for the others) or a peer
        # (pulls through the cluster's mirror first). None: a plain push.
        self._role: Literal["seed", "peer"] | None = None
        self._gate = asyncio.Semaphore()

    async def run(self, gate: asyncio.Semaphore, policy: RetryPolicy) -> list[NodeResult]:
        """Push, reconnecting after a lost session as ``policy`` allows; one result per image."""
        self._gate = gate
        try:
            await self._attempts(policy)
        finally:
            if self.seeding is not None and self._role == "seed":
                for seeded, outcome in zip(self.seeding.choice.seeded, self.outcomes, strict=True):
                    seeded.seed_finished(outcome.result.ok)
        return [outcome.result for outcome in self.outcomes]

    async def _attempts(self, policy: RetryPolicy) -> None:
        async with self._gate:
            for attempt in range(1, policy.retries + 2):
                lost = await self._session(first=attempt == 1)
                if lost is None:
                    break
                if attempt > policy.retries:
                    self._give_up(lost, attempt)
                    break
                delay = policy.delay(attempt)
                policy.notify(
                    f"{self.job.node.name}: {lost}; reconnecting in {delay:g} s "
                    f"(retry {attempt} of {policy.retries})"
                )
                await asyncio.sleep(delay)
                for outcome in self.outcomes:
                    if outcome.cause is lost:
                        outcome.retry()

    async def _session(self, *, first: bool) -> NodeloadError | None:
        """One connection: push every image still pending. The error that lost the session, if
        another session may overcome it; None when every image has its outcome."""
        loop = asyncio.get_running_loop()
        connecting = loop.time()
        pending = [i for i, outcome in enumerate(self.outcomes) if outcome.pending]
        try:
            transport = self.job.transport
            if transport is None:
                raise NodeError(self.job.node.problem or "nodeload cannot reach this node")
            # What the connection carried before (a persistent session's, kept open): not this run's.
            before = transport.traffic()
            async with (
                transport,
                self.open_store(transport, self.job.node, self.progress) as store,
                self._answering(store),
            ):
                connect = self.outcomes[pending[0]].result.timings
                connect["connect"] = round(connect.get("connect", 0.0) + loop.time() - connecting, 4)
                if self.seeding is not None and not self.seeding.choice.reported(self.seeding.node):
                    await self._take_part(self.seeding, transport, store)
                for i in pending:
                    image, outcome = self.images[i], self.outcomes[i]
                    if outcome.started is None:  # the first image's time and traffic include connecting
                        outcome.started = connecting if i == 0 else loop.time()
                        outcome.since = before if i == 0 else transport.traffic()
                    namespace = self.job.node.namespace or image.namespace
                    peer = None
                    if self.seeding is not None and self._role == "peer":
                        seeded, check = self.seeding.choice.seeded[i], self.seeding.check
                        executor, mirror = transport.executor(), self.job.node.mirror
                        peer = PeerPull(seeded, executor, check, mirror, self._idle)
                    pushing = _Pushing(
                        store, transport, self.job.node, namespace, self.ready[i], self.early[i], peer,
                        waiting=self._idle if image.asks_nodes else None,
                    )  # fmt: skip
                    await pushing.run(outcome)
                    if isinstance(outcome.cause, _RETRYABLE):
                        return outcome.cause
                    if isinstance(outcome.cause, _SESSION_LOST):
                        self._fail_pending(outcome.cause)  # images after a lost session were never tried
                        return None
        except BaseException as err:
            if not isinstance(err, Exception):  # Ctrl-C, cancellation: not a node failure
                raise
            cause = _as_node_error(self.job.node, err)
            for survey in self.surveys:  # what it holds is not known: the others need not wait for it
                survey.gone(self.index)
            if self.seeding is not None:  # no candidate for a seed: the others need not wait for it
                self.seeding.choice.report(self.seeding.node, None)
            # Reconnecting after a loss, the node may still be coming back (containerd restarting).
            if not first and isinstance(cause, _RETRYABLE_RECONNECT):
                return cause
            self._fail_pending(cause, round(loop.time() - connecting, 3))
        return None

    @contextlib.asynccontextmanager
    async def _answering(self, store: ImageStore) -> AsyncIterator[None]:
        """While the session is open, answer what the images' sources ask of this node."""
        tasks = [
            asyncio.create_task(survey.answer(self.index, partial(self._holding, store, image)))
            for survey, image in zip(self.surveys, self.images, strict=True)
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for survey in self.surveys:  # a session that ended before the question came
                survey.gone(self.index)

    async def _holding(self, store: ImageStore, image: ImageJob, query: HoldingQuery) -> Holding | None:
        if not isinstance(store, HoldingAnswerer):
            return None  # written some way that cannot say: it is sent everything it is missing
        return await store.holding(query, self.job.node.namespace or image.namespace)

    async def _take_part(self, seeding: _Seeding, transport: Transport, store: ImageStore) -> None:
        """Say how much of the images this node lacks (nothing when it pulls through no mirror: then
        it is pushed to at once), and, given a mirror, wait for the choice: a seed, or a peer."""
        missing = await self._missing(seeding, transport, store)
        seeding.choice.report(seeding.node, missing)
        if missing is None:
            return
        async with self._idle():
            self._role = "seed" if await seeding.choice.is_seed(seeding.node) else "peer"
        if self._role == "seed":
            self.progress.message(self.job.node.name, "seed: pushing for its peers")

    async def _missing(self, seeding: _Seeding, transport: Transport, store: ImageStore) -> float | None:
        """Bytes of the images the node lacks; None when it pulls through no mirror (not waiting
        for the images then, so that a push to a cluster without one starts as early as ever);
        infinite when it cannot say (its push will say why)."""
        from nodeload.mirror import mirrored

        if seeding.check and not await mirrored(transport.executor(), self.job.node.mirror):
            return None
        self.progress.message(self.job.node.name, "comparing what the nodes hold, to choose the seeds")
        if not isinstance(store, SeedCandidate):
            return float("inf")
        try:
            total = 0
            for image, future in zip(self.images, self.ready, strict=True):
                prepared = await asyncio.shield(future)
                total += await store.missing_bytes(prepared, self.job.node.namespace or image.namespace)
            return total
        except Exception:  # the push itself will say what is wrong with this node
            return float("inf")

    @contextlib.asynccontextmanager
    async def _idle(self) -> AsyncIterator[None]:
        """While waiting on other nodes, this node's place among those worked on goes to another."""
        self._gate.release()
        try:
            yield
        finally:
            await self._gate.acquire()

    def _fail_pending(self, cause: NodeloadError, seconds: float | None = None) -> None:
        for outcome in self.outcomes:
            if outcome.pending:
                outcome.fail(cause, seconds)

    def _give_up(self, lost: NodeloadError, attempts: int) -> None:
        """The retries are spent: the interrupted image fails saying so, and the untried ones with it."""
        final = type(lost)(
            f"{lost} (attempt {attempts} of {attempts}); rerun to resume: what reached the node stays"
        )
        for outcome in self.outcomes:
            if outcome.cause is lost or outcome.pending:
                outcome.fail(final)


@dataclass
class _Pushing:
    """One image to one node, through an open store."""

    store: ImageStore
    transport: Transport
    node: NodeSpec
    namespace: str
    prepared: asyncio.Future[PreparedImage]
    early: EarlyLayers
    peer: PeerPull | None = None
    # Held while the image is prepared, when its preparation waits for every node: gives the
    # node's place among those worked on to another.
    waiting: Callable[[], AbstractAsyncContextManager[None]] | None = None

    async def run(self, outcome: _Outcome) -> None:
        """Push; a failure lands in ``outcome``. Time and traffic count from when its push began."""
        loop = asyncio.get_running_loop()
        result, written = outcome.result, outcome.written
        result.store(self.store.about)
        try:
            if self.peer is None and isinstance(self.store, EarlyReceiver) and not self.prepared.done():
                async with self.store.receiving(self.early, self.namespace, written):
                    done = await self._push(result, written)
            else:
                done = await self._push(result, written)
            result.delivered(done)
        except Exception as err:
            outcome.fail(_as_node_error(self.node, err))
        finally:
            result.count(written)
            result.seconds = round(loop.time() - (outcome.started or loop.time()), 3)
            _count_traffic(self.transport, result, outcome.since)

    async def _push(self, result: NodeResult, written: Written) -> Delivery:
        if self.waiting is not None and not self.prepared.done():
            async with self.waiting():
                await asyncio.wait([self.prepared])
        image = await asyncio.shield(self.prepared)
        options = dataclasses.replace(image.options, namespace=self.namespace)
        result.namespace, result.name, result.export = options.namespace, options.name, image.export
        peer, store = self.peer, self.store
        if peer is not None and isinstance(store, PeerPuller):
            pulled = await store.pull_from_mirror(image, options, peer)
            if isinstance(pulled, Delivery):
                return pulled
            if pulled:
                result.warnings.append(pulled)  # why the node did not pull: it is pushed to
        return await store.push(image, options, written)


@runtime_checkable
class PeerPuller(Protocol):
    """A store whose node can pull an image from seed nodes through the cluster's mirror."""

    async def pull_from_mirror(
        self, image: PreparedImage, options: WriteOptions, peers: PeerPull
    ) -> Delivery | str:
        """Pull instead of receiving a push: what was done; or why the node cannot (the caller
        pushes; an empty reason is nothing worth telling)."""
        ...


def _count_traffic(transport: Transport, result: NodeResult, before: Traffic | None) -> None:
    after = transport.traffic()
    if after is not None:
        result.wire_bytes_sent = after.sent - (before.sent if before else 0)
        result.wire_bytes_received = after.received - (before.received if before else 0)


def _as_node_error(node: NodeSpec, err: BaseException) -> NodeloadError:
    """Errors as the user should read them; unexpected ones are logged for ``--debug``."""
    if isinstance(err, BaseExceptionGroup):  # a task group's: the error that stopped it decides
        return _as_node_error(node, first_error(err))
    if isinstance(err, NodeloadError):
        return err
    log.debug("%s failed", node.name, exc_info=err)
    if isinstance(err, OSError):  # the OS refused something here, not on the node
        return LocalError(f"local error: {err}")
    return InternalError(f"internal error: {type(err).__name__}: {err} ({setting('debug')} shows where)")


def _prepare_in_turn(
    images: Sequence[ImageJob], early: Sequence[EarlyLayers], surveys: Sequence[_Survey]
) -> tuple[list[asyncio.Future[PreparedImage]], asyncio.Task[None]]:
    """Prepare the images one after another; a future for each, and the task preparing them.

    One at a time: two exports at once would only compete for the same disk and cores. What a
    source writes to its cache is written atomically, so abandoning it midway is safe.
    """
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[PreparedImage]] = [loop.create_future() for _ in images]

    async def run() -> None:
        for image, future, layers, survey in zip(images, futures, early, surveys, strict=True):
            outcome: PreparedImage | BaseException
            try:
                outcome = await image.prepare(layers, survey)
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # handed over to the awaiting coroutines
                outcome = err
            finally:
                layers.close()
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    for future in futures:  # a failure nobody awaited must not be logged as "never retrieved"
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return futures, asyncio.create_task(run())
