"""Push an image into a containerd reached through a gRPC endpoint.

Order matters for safety: blobs are written children first under a lease,
layers unpacked, and only then the image record is created or moved. An
interrupted push leaves no record pointing at missing content, and the
next run resumes partial ingests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import IO, TypeVar

import grpc

from nodeload.containerd.client import (
    DEFAULT_TIMEOUT,
    ContainerdClient,
    NodeInfo,
    WriteResult,
    rpc_error,
)
from nodeload.containerd.connect import ContainerdConnection, candidate_sockets, connect_containerd
from nodeload.early import EarlyLayers, ReadyLayer
from nodeload.errors import BlobMismatch, ContainerdUnavailable, NodeError, NodeloadError, PlatformNotFound
from nodeload.graph import ImageGraph
from nodeload.holdings import Holding, HoldingQuery
from nodeload.image import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_DOCKER_LAYER_TAR,
    MEDIA_OCI_LAYER_ZSTD,
    Descriptor,
    ImageSource,
    sniff,
)
from nodeload.jsondoc import parse
from nodeload.leftovers import abandoned
from nodeload.nodes.spec import NodeSpec
from nodeload.pins import choose_pins, gc_labels, references
from nodeload.plan import (
    LABEL_GC_SNAPSHOT,
    LABEL_UNCOMPRESSED,
    BlobStep,
    NodeState,
    Plan,
    chain_ids,
    make_plan,
    manifest_labels,
)
from nodeload.platforms import Platform, choose_platform
from nodeload.progress import ProgressSink
from nodeload.reference import parse_reference
from nodeload.stores.base import (
    CRI_NAMESPACE,
    Delivery,
    ImageStore,
    PeerPull,
    PreparedImage,
    StoreInfo,
    WriteOptions,
    Written,
    check_name,
    same_image,
)
from nodeload.stores.ctr_import import open_ctr_import
from nodeload.tasks import task_group, together
from nodeload.transports.base import Transport
from nodeload.transports.bridge import NoRelay
from nodeload.wording import setting

T = TypeVar("T")
BlobOpener = Callable[[Descriptor, int], AbstractContextManager[IO[bytes]]]

DEFAULT_SNAPSHOTTER = "overlayfs"
# Blobs in flight per node: one stream rarely fills a tunnel (each 1 MiB write waits its turn).
_PARALLEL_BLOBS = 3
_CRI_WAIT_SECONDS = 10.0
_PLAN_ATTEMPTS = 3  # looks at the node before giving up on a plan that what it holds keeps changing


@asynccontextmanager
async def open_containerd(
    transport: Transport,
    node: NodeSpec,
    progress: ProgressSink,
    *,
    socket: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    held: set[str] | None = None,
) -> AsyncIterator[ImageStore]:
    """The node's containerd as an image store: written over a gRPC session
    (:func:`~nodeload.containerd.connect.connect_containerd`), or, on a node that nothing can
    carry a stream to (no forwarding, no relay program), with ``ctr import`` when the transport
    can run commands there: a strategy of its own, with the same plan and naming rules.

    Raises:
        ContainerdUnavailable: with the reason for each socket tried.
    """
    async with contextlib.AsyncExitStack() as stack:
        try:
            session = await stack.enter_async_context(
                connect_containerd(transport, node, progress, socket=socket, timeout=timeout, held=held)
            )
        except NoRelay:
            executor = transport.executor()
            if executor is None:
                raise
            sockets = candidate_sockets(node, socket)
            yield await stack.enter_async_context(
                open_ctr_import(executor, node, progress, sockets, executor.label)
            )
            return
        yield ContainerdStore(session, node.name, progress)


async def _translated(what: str, call: Awaitable[T]) -> T:
    """``await call``, with containerd's gRPC errors turned into errors the user can act on."""
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise rpc_error(what, err) from err


@dataclasses.dataclass(frozen=True)
class _Seen:
    """What the node reported before a plan: its state, the labels of every blob looked at,
    other blobs that may keep the image's (the replaced image), what the name points at now."""

    state: NodeState
    labels: dict[str, dict[str, str]]
    roots: list[str]
    named: str | None


async def _true() -> bool:
    return True


async def _none() -> None:
    return None


def _cannot_refresh(desc: Descriptor) -> bool:
    return False  # an early layer was compressed a moment ago; push's own write may refresh it


def _check_platform(graph: ImageGraph, info: NodeInfo, options: WriteOptions) -> None:
    """A single-platform image for another platform is almost surely a mistake: say so."""
    declared = graph.platform
    if options.platform is None and declared.os and choose_platform(info.platform, [declared]) is None:
        raise PlatformNotFound(
            f"the image is for {declared} but the node runs {info.platform}; "
            f"set {setting('platform', declared)} to push it anyway"
        )


class ContainerdStore:
    """One node's containerd, as a destination for images (see :func:`open_containerd`).

    Each namespace is written by a :class:`_Writer` of its own, whose client is bound to that
    namespace: the early layers of an image and its push share it (and its lease).
    """

    def __init__(self, session: ContainerdConnection, node: str, progress: ProgressSink) -> None:
        """Write through ``session``; ``node`` labels progress."""
        self._session, self._node, self._progress = session, node, progress
        self._writers: dict[str, _Writer] = {}

    @property
    def about(self) -> StoreInfo:
        """What the node's containerd says of itself."""
        session = self._session
        return StoreInfo(session.socket, session.info.version, session.reach)

    @property
    def platform(self) -> Platform:
        """The platform the node runs."""
        return self._session.info.platform

    def writer(self, namespace: str) -> _Writer:
        """The writer of ``namespace`` on this node (``nodeload serve`` holds its lease for its
        whole run and stores uploads with its client)."""
        if namespace not in self._writers:
            client = self._session.client.bound(namespace)
            self._writers[namespace] = _Writer(client, self._session.info, self._node, self._progress)
        return self._writers[namespace]

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        """Push ``image``; what was done (``written`` learns what went out).

        Raises:
            NodeloadError: on anything the user must act on.
        """
        return await _translated("a request", self.writer(options.namespace).push(image, options, written))

    @asynccontextmanager
    async def receiving(self, early: EarlyLayers, namespace: str, written: Written) -> AsyncIterator[None]:
        """Send the layers ``early`` announces, the ones the node lacks, while the block runs.

        They are written under the lease :meth:`push` then plans under (it holds them until the
        image record refers to them), and ``written`` counts them as sent, not as found.
        Layers the node holds, or holds a twin of, are left to the plan.
        """
        async with self.writer(namespace).receiving(early, written):
            yield

    async def holding(self, query: HoldingQuery, namespace: str) -> Holding:
        """What the node holds of ``query``'s blobs, layers and image, for images of ``namespace``
        (see :mod:`nodeload.holdings`)."""
        return await self.writer(namespace).holding(query)

    async def missing_bytes(self, image: PreparedImage, namespace: str) -> int:
        """Bytes of ``image`` (this node's platform) its content store lacks: what a push here
        would send, before twins and resumes. Ranks the candidates for seed nodes."""
        return await self.writer(namespace).missing_bytes(image)

    async def pull_from_mirror(
        self, image: PreparedImage, options: WriteOptions, peers: PeerPull
    ) -> Delivery | str:
        """Have the node pull the image through its registry mirror (from a seed that holds it)
        instead of receiving it from here: what was done; or why it could not (the caller pushes
        as usual; an empty reason is nothing worth telling)."""
        return await self.writer(options.namespace).pull_from_mirror(image, options, peers)


class _Writer:
    """Images written into one namespace of a node's containerd, with a client bound to it."""

    def __init__(self, client: ContainerdClient, info: NodeInfo, node: str, progress: ProgressSink) -> None:
        self.client = client
        self._info, self._node, self._progress = info, node, progress
        self._early: asyncio.Task[None] | None = None  # layers sent while the image is prepared
        self._swept = False  # leases of runs that are gone removed from the namespace

    async def store_document(self, desc: Descriptor, data: bytes, labels: Mapping[str, str]) -> None:
        """Write one small document (a manifest pushed by digest) with its GC labels."""
        stream = io.BytesIO(data)

        def open_at(offset: int) -> AbstractContextManager[IO[bytes]]:
            stream.seek(offset)
            return contextlib.nullcontext(stream)

        await _translated(
            f"storing {desc.digest}",
            self.client.write_blob(f"nodeload-{desc.digest}", desc, open_at, labels),
        )

    @asynccontextmanager
    async def receiving(self, early: EarlyLayers, written: Written) -> AsyncIterator[None]:
        """See :meth:`ContainerdStore.receiving`."""
        async with self.client.leased():
            self._early = asyncio.create_task(self._receive(early, written))
            try:
                yield
            finally:
                task, self._early = self._early, None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # its error, if any, already reached push (or the push failed first)

    async def _receive(self, early: EarlyLayers, written: Written) -> None:
        if not await early.expected():
            return
        announced: set[str] = set()
        gate = asyncio.Semaphore(_PARALLEL_BLOBS)
        async with task_group() as group:
            async for layer in early.follow():
                if layer.desc.digest not in announced:
                    announced.add(layer.desc.digest)
                    group.create_task(self._receive_layer(layer, gate, written))

    async def _receive_layer(self, layer: ReadyLayer, gate: asyncio.Semaphore, written: Written) -> None:
        async with gate:
            if await self.client.content_info(layer.desc.digest):
                return  # the plan finds it and protects it
            if layer.diff_id and await self.equivalent_blob(layer.diff_id):
                return  # or its twin, when the source may use one
            step = BlobStep(layer.desc, present=False, labels={})
            await self._put_blob(lambda desc, offset: layer.open(offset), _cannot_refresh, step, written)

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        """See :meth:`ContainerdStore.push`."""
        done = Delivery()
        info, source = self._info, image.source
        graph = await asyncio.to_thread(image.graph, options.platform or info.platform)
        _check_platform(graph, info, options)
        snapshotter = _snapshotter(info, options)
        if self._early is not None:
            started = time.monotonic()
            await self._early  # the plan then finds what was sent early
            done.timings["write_early"] = round(time.monotonic() - started, 4)
        lease_outlives_push = self.client.lease is not None  # nodeload serve's, for its whole run
        async with self.client.leased(options.name):
            with done.timed("plan"):
                plan, named, roots = await self._plan(graph, snapshotter, source.rewritable, options)
                done.platform, done.digest = str(graph.platform), plan.root.digest
                done.image_id = graph.config.desc.digest
                done.blobs_total = len(plan.blobs)
                # Sent early, or by an earlier attempt of this run: sent, not found.
                found = [b for b in plan.blobs if b.present and b.desc.digest not in written.blobs]
                done.blobs_skipped = len(found)
                done.bytes_skipped = sum(b.desc.size for b in found)
                existing, pushed = named if options.name_from_source else None, plan.root.digest
                read = self.client.read_document
                same = await same_image(read, existing, pushed, plan.config_digest, graph.platform)
                check_name(options, pushed, existing, same_image=same)
                await self._sweep_dead_runs()  # now that our lease pins what the plan relies on
            self._progress.message(self._node, f"sending {len(plan.to_send)} of {len(plan.blobs)} blobs")
            with done.timed("write"):
                await self._put_blobs(source, plan, written, done)
            if options.unpack:
                with done.timed("unpack"):
                    done.layers_unpacked = await self._unpack(plan, snapshotter)
            self._progress.message(self._node, "tagging")
            with done.timed("record"):
                await self.client.put_image(options.name, plan.root)
                if roots and lease_outlives_push:  # the replaced image is free to go now
                    await self.client.unprotect(roots)
        # CRI only indexes images it could run: the node's own platform.
        if options.namespace == CRI_NAMESPACE and info.has_cri and graph.platform.matches(info.platform):
            with done.timed("record"):
                done.cri_indexed = await self._wait_for_cri(options.name, plan.config_digest)
        return done

    async def holding(self, query: HoldingQuery) -> Holding:
        """See :meth:`ContainerdStore.holding`."""
        infos = await together(*(self.client.content_info(d) for d in query.blobs))
        blobs = {d: int(info.size) for d, info in zip(query.blobs, infos, strict=True) if info is not None}
        found = await together(*(self.equivalent_blob(d) for d in query.layers))
        layers = {d: blob.digest for d, blob in zip(query.layers, found, strict=True) if blob is not None}
        complete = await self._complete(query) if query.image else None
        return Holding(blobs, layers, complete)

    async def _complete(self, query: HoldingQuery) -> tuple[Descriptor, dict[str, bytes]] | None:
        """The record's manifest and documents when the node holds ``query.image`` as it is,
        complete: the record points at a manifest of that config whose blobs are there and kept
        by its GC labels, unpacked (the top snapshot committed and kept by the config's label)
        and, in kubelet's namespace, known to CRI under that ID. None when anything differs or
        cannot be read (a push then does the work)."""
        assert query.image is not None
        name, config = query.image
        client = self.client
        try:
            record = await client.get_image(name)
            if record is None or record.target.media_type not in MANIFEST_MEDIA_TYPES:
                return None
            manifest_bytes = await client.read_document(record.target.digest)
            manifest = parse(manifest_bytes, "the node's manifest")
            layers = [Descriptor.from_json(layer) for layer in manifest.objs("layers")]
            blobs = [Descriptor.from_json(manifest.obj("config")), *layers]
            if blobs[0].digest != config or len(layers) != len(query.layers):
                return None
            infos = await together(
                *(client.content_info(d) for d in (record.target.digest, *(b.digest for b in blobs)))
            )
            if not all(infos):
                return None
            wanted = {record.target.digest: manifest_labels(blobs[0], layers)}
            if query.unpacked and query.layers:
                top = chain_ids(query.layers)[-1]
                wanted_in = WriteOptions(namespace=client.namespace, snapshotter=query.snapshotter)
                snapshotter = _snapshotter(self._info, wanted_in)
                if not await client.snapshot_exists(snapshotter, top):
                    return None
                wanted[config] = {f"{LABEL_GC_SNAPSHOT}.{snapshotter}": top}
            labels = {info.digest: info.labels for info in infos if info is not None}
            if any(labels[d].get(k) != v for d, want in wanted.items() for k, v in want.items()):
                return None
            cri = client.namespace == CRI_NAMESPACE and self._info.has_cri
            if cri and await client.cri_image_id(name) != config:
                return None
            root = Descriptor(record.target.media_type, record.target.digest, int(record.target.size))
            documents = {root.digest: manifest_bytes, config: await client.read_document(config)}
        except (NodeloadError, grpc.aio.AioRpcError, KeyError, TypeError, ValueError):
            return None
        return root, documents

    async def missing_bytes(self, image: PreparedImage) -> int:
        """See :meth:`ContainerdStore.missing_bytes`."""
        graph = await asyncio.to_thread(image.graph, image.options.platform or self._info.platform)
        digests = [blob.digest for blob in graph.blobs]
        infos = await together(*(self.client.content_info(d) for d in digests))
        held = {d for d, info in zip(digests, infos, strict=True) if info is not None}
        return sum(blob.size for blob in graph.blobs if blob.digest not in held)

    async def pull_from_mirror(
        self, image: PreparedImage, options: WriteOptions, peers: PeerPull
    ) -> Delivery | str:
        """See :meth:`ContainerdStore.pull_from_mirror`. The pull is CRI's own (kubelet's path), by
        digest, so the content is exactly the seed's; then the image record is named and CRI's
        view checked as after a push."""
        if options.namespace != CRI_NAMESPACE or not self._info.has_cri or not options.unpack:
            return ""  # CRI pulls into k8s.io, unpacked, and only where it runs
        found = await peers.mirror_for(parse_reference(options.name).domain)
        if isinstance(found, str) and peers.check:
            return f"{found}: pushed directly"
        endpoint = "the node's mirror" if isinstance(found, str) else found.endpoint
        self._progress.message(self._node, f"peer: waiting for the seed nodes ({endpoint})")
        if not await peers.wait_for_seeds():
            return "no seed node got the image: pushed directly"
        done = Delivery(delivered_by="peer-pull")
        graph = await asyncio.to_thread(image.graph, options.platform or self._info.platform)
        _check_platform(graph, self._info, options)
        root = graph.root
        repository = options.name.rpartition("@")[0] or options.name.rsplit(":", 1)[0]
        self._progress.message(self._node, f"peer: pulling through {endpoint}")
        try:
            with done.timed("pull"):
                await self.client.cri_pull(
                    f"{repository}@{root.digest}", timeout=max(self.client.timeout, 600)
                )
        except grpc.aio.AioRpcError as err:
            return f"pulling through {endpoint} failed ({err.details() or err.code().name}): pushed directly"
        record = await self.client.get_image(options.name) if options.name_from_source else None
        existing = record.target.digest if record is not None else None
        same = await same_image(
            self.client.read_document, existing, root.digest, graph.config.desc.digest, graph.platform
        )
        check_name(options, root.digest, existing, same_image=same)
        with done.timed("record"):
            await self.client.put_image(options.name, root)
            done.cri_indexed = await self._wait_for_cri(options.name, graph.config.desc.digest)
        done.platform, done.digest = str(graph.platform), root.digest
        done.image_id = graph.config.desc.digest
        done.blobs_total = 2 + len(graph.layers) + len(graph.indexes)
        return done

    async def _sweep_dead_runs(self) -> None:
        """Delete the leases of earlier runs from this machine that are gone (killed, or a lost
        session of this run), once: they would pin content for a day."""
        if self._swept:
            return
        self._swept = True
        now = datetime.now(UTC)
        gone = [
            lease
            for lease in await self.client.leases()
            if abandoned(lease, now, older_than=timedelta.max, held=frozenset(self.client.held))
        ]
        if gone:
            # Their unfinished uploads would go with them: ours now, so that this push resumes them.
            await self.client.protect([], ingests=[ingest.ref for ingest in await self.client.ingests()])
        for lease in gone:
            await self.client.delete_lease(lease.id)
        if gone:
            self._progress.message(self._node, f"removed {len(gone)} lease(s) of interrupted runs from here")

    async def _put_blobs(self, source: ImageSource, plan: Plan, written: Written, done: Delivery) -> None:
        """Layers and configs a few at a time (keeping the link full), then their manifests and indexes.

        Parents still come after their children: a manifest is written once what it references is.
        """
        documents = INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES
        children = [step for step in plan.blobs if step.desc.media_type not in documents]
        parents = [step for step in plan.blobs if step.desc.media_type in documents]
        gate = asyncio.Semaphore(_PARALLEL_BLOBS)

        async def put(step: BlobStep) -> None:
            async with gate:
                await self._put_blob(source.open_blob, source.refresh, step, written, done)

        await together(*(put(step) for step in children))
        for step in parents:
            await self._put_blob(source.open_blob, source.refresh, step, written, done)

    async def _plan(
        self, graph: ImageGraph, snapshotter: str, rewritable: bool, options: WriteOptions
    ) -> tuple[Plan, str | None, list[str]]:
        """Plan against what the node holds, with all of that pinned by our lease; also the
        digest the image's name points at now (None: no such image) and the other images'
        blobs pinned because they keep some of this one's (the replaced image).

        The node is asked first, then the fewest references that keep what it reported (and
        the highest committed snapshot) are added to the lease, then it is asked again. If
        anything went away or changed in between (a deletion, kubelet's image GC), every blob
        and snapshot the image could use is pinned one by one, and the node asked once more.

        Raises:
            NodeError: what the node holds kept changing under the plan.
        """
        chains = chain_ids(graph.diff_ids) if options.unpack else []
        pinned: frozenset[str] = frozenset()  # blobs; once set, every chain is pinned too
        for _ in range(_PLAN_ATTEMPTS):
            seen = await self._look(graph, snapshotter, rewritable, chains, options.name)
            roots = await self._pin(seen, snapshotter, pinned)
            if roots is not None:
                return make_plan(graph, seen.state, snapshotter, rewritable), seen.named, roots
            if not pinned:
                everything = [blob.digest for blob in graph.blobs]
                await self.client.protect(everything, [(snapshotter, chain) for chain in chains])
                pinned = frozenset(everything)
        raise NodeError("what the node holds kept changing while the push was planned; run it again")

    async def _pin(self, seen: _Seen, snapshotter: str, pinned: frozenset[str]) -> list[str] | None:
        """Add the fewest references that keep what ``seen`` found; the other images' blobs
        among them, or None when the node changed meanwhile (gone, or its GC labels moved)."""
        top = next(iter(seen.state.snapshots), None)
        needed = [d for d in seen.labels if d in seen.state.present]
        pins = choose_pins(needed, seen.labels, snapshotter, top, seen.roots, pinned, bool(pinned))
        await self.client.protect(pins.digests, [(snapshotter, pins.snapshot)] if pins.snapshot else [])
        relied = [d for d in seen.labels if d in seen.state.present or d in pins.labelled]
        infos, still = await asyncio.gather(
            asyncio.gather(*(self.client.content_info(d) for d in relied)),
            self.client.snapshot_exists(snapshotter, top) if top else _true(),
        )
        unchanged = still and all(
            info is not None and gc_labels(info.labels) == gc_labels(seen.labels[d])
            for d, info in zip(relied, infos, strict=True)
        )
        return [d for d in pins.digests if d in seen.roots] if unchanged else None

    async def _look(
        self, graph: ImageGraph, snapshotter: str, rewritable: bool, chains: list[str], name: str
    ) -> _Seen:
        """Ask the node, all at once, which of the image's blobs (or their twins) and snapshots
        it holds, with their labels, and what the image's name points at now."""
        digests = [blob.digest for blob in graph.blobs]
        infos, committed, image = await asyncio.gather(
            asyncio.gather(*(self.client.content_info(d) for d in digests)),
            asyncio.gather(*(self.client.snapshot_exists(snapshotter, chain) for chain in chains)),
            self.client.get_image(name) if name else _none(),
        )
        labels = {d: dict(info.labels) for d, info in zip(digests, infos, strict=True) if info is not None}
        present = set(labels)
        equivalents: dict[str, Descriptor] = {}
        if rewritable:
            layers = zip(graph.layers, graph.diff_ids, strict=True)
            wanted = [diff_id for layer, diff_id in layers if layer.digest not in present]
            twins = await asyncio.gather(*(self.equivalent_blob(diff_id) for diff_id in wanted))
            equivalents = {diff_id: twin for diff_id, twin in zip(wanted, twins, strict=True) if twin}
        twin_digests = [twin.digest for twin in equivalents.values()]
        twin_infos = await asyncio.gather(*(self.client.content_info(d) for d in twin_digests))
        for digest, info in zip(twin_digests, twin_infos, strict=True):
            if info is not None:
                present.add(digest)
                labels[digest] = dict(info.labels)
        equivalents = {diff_id: twin for diff_id, twin in equivalents.items() if twin.digest in present}
        named = image.target.digest if image is not None else None
        roots: list[str] = []
        if named is not None and named not in labels:  # the image being replaced: it may keep the rest
            roots = [named]
            await self._look_below(named, labels, snapshotter)
        # A committed chain implies its parents: the highest one is all the plan needs.
        top = [chain for chain, ok in zip(chains, committed, strict=True) if ok][-1:]
        state = NodeState(frozenset(present), equivalents, frozenset(top), labels)
        return _Seen(state, labels, roots, named)

    async def _look_below(
        self, root: str, labels: dict[str, dict[str, str]], snapshotter: str, depth: int = 3
    ) -> None:
        """Add the labels of ``root`` and of the documents it refers to (an index, its manifests,
        their configs) to ``labels``; what is absent is left out."""
        level = [root]
        for _ in range(depth):
            level = [d for d in dict.fromkeys(level) if d not in labels]
            if not level:
                return
            infos = await asyncio.gather(*(self.client.content_info(d) for d in level))
            below: list[str] = []
            for digest, info in zip(level, infos, strict=True):
                if info is not None:
                    labels[digest] = dict(info.labels)
                    below += references(info.labels, snapshotter)[0]
            level = below

    async def equivalent_blob(self, diff_id: str) -> Descriptor | None:
        """A blob on the node with the same uncompressed content, if any.

        Either the layer stored uncompressed under its own digest (what
        ``docker save | ctr import`` leaves), or a compressed blob that
        containerd labelled with this uncompressed digest when unpacking it.
        """
        raw = await self.client.content_info(diff_id)
        if raw is not None:
            return Descriptor(MEDIA_DOCKER_LAYER_TAR, diff_id, int(raw.size))
        for info in await self.client.find_by_label(LABEL_UNCOMPRESSED, diff_id):
            kind = sniff(await self.client.read_head(info.digest, 4))
            media_type = {"gzip": MEDIA_DOCKER_LAYER_GZIP, "zstd": MEDIA_OCI_LAYER_ZSTD}.get(kind or "")
            if media_type:
                return Descriptor(media_type=media_type, digest=info.digest, size=int(info.size))
        return None

    async def _put_blob(
        self,
        open_blob: BlobOpener,
        refresh: Callable[[Descriptor], bool],
        step: BlobStep,
        written: Written,
        done: Delivery | None = None,
    ) -> None:
        """Write one blob of the plan (or label it, when present); ``written`` learns what went
        out, ``done`` (the push's, not the early layers') what was found there after all."""
        if step.present:
            await self.client.set_labels(step.desc.digest, step.labels)
            return
        ref = f"nodeload-{step.desc.digest}"
        already = await self.client.ingest_offset(ref) or 0
        handle = self._progress.blob_started(self._node, step.desc.digest, step.desc.size, already)

        def open_at(offset: int) -> AbstractContextManager[IO[bytes]]:
            if step.data is not None:  # documents we hold, possibly rewritten
                stream = io.BytesIO(step.data)
                stream.seek(offset)
                return contextlib.nullcontext(stream)
            return open_blob(step.desc, offset)

        digest = step.desc.digest
        earlier = written.partial.get(digest, 0)  # sent by failed attempts of this run

        async def write() -> WriteResult:
            try:
                return await self.client.write_blob(
                    ref, step.desc, open_at, step.labels, lambda n: self._progress.advance(handle, n)
                )
            except NodeError as err:
                written.bytes += err.bytes_sent
                written.partial[digest] = written.partial.get(digest, 0) + err.bytes_sent
                raise

        try:
            outcome = await write()
        except BlobMismatch:
            # A cache the source keeps (compressed layers) may be damaged: rebuild it once.
            if not await asyncio.to_thread(refresh, step.desc):
                raise
            if done is not None:
                done.warnings.append(f"the cached copy of {digest} was damaged; it was rebuilt")
            earlier = written.partial.get(digest, 0)
            outcome = await write()
        self._progress.blob_done(handle)
        # Committed by another writer meanwhile, or already stored for another namespace
        # (containerd shares blobs between namespaces; nothing crossed the wire).
        if outcome.already_existed or (outcome.bytes_sent == 0 and already == 0 and step.desc.size):
            if done is not None:
                done.blobs_skipped += 1
                done.bytes_skipped += step.desc.size
            await self.client.set_labels(step.desc.digest, step.labels)
            return
        written.bytes += outcome.bytes_sent
        written.resumed += max(0, outcome.resumed_from - earlier)
        written.blobs.add(digest)

    async def _unpack(self, plan: Plan, snapshotter: str) -> int:
        """Unpack the plan's layers; how many this push unpacked itself."""
        unpacked = 0
        for i, step in enumerate(plan.unpack, 1):
            self._progress.message(self._node, f"unpacking layer {i}/{len(plan.unpack)}")
            if await self.client.apply_layer(
                snapshotter, step.layer, step.parent, step.chain_id, step.diff_id
            ):
                unpacked += 1
                # Only now is the uncompressed digest verified (Apply checked it), as in
                # containerd's own unpacker; later pushes trust this label to find twins.
                await self.client.set_labels(step.layer.digest, {LABEL_UNCOMPRESSED: step.diff_id})
            else:  # committed by someone else meanwhile: ours to keep until the image names it
                await self.client.protect([], [(snapshotter, step.chain_id)])
        key, value = plan.snapshot_label
        if value:
            await self.client.set_labels(plan.config_digest, {key: value})
        return unpacked

    async def _wait_for_cri(self, name: str, config_digest: str) -> bool:
        """CRI indexes images from containerd events; give it a moment."""
        deadline = time.monotonic() + _CRI_WAIT_SECONDS
        while True:
            image_id = await self.client.cri_image_id(name)
            if image_id == config_digest:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)


def _snapshotter(info: NodeInfo, options: WriteOptions) -> str:
    """The snapshotter to unpack into: the one asked for, else CRI's (in its namespace), else
    overlayfs.

    Raises:
        ContainerdUnavailable: the node has no such snapshotter.
    """
    if options.snapshotter:
        wanted = options.snapshotter
    elif options.namespace == CRI_NAMESPACE and info.cri_snapshotter:
        wanted = info.cri_snapshotter
    else:
        wanted = DEFAULT_SNAPSHOTTER
    if options.unpack and wanted not in info.snapshotters:
        available = ", ".join(info.snapshotters) or "none"
        raise ContainerdUnavailable(
            f"snapshotter {wanted!r} is not available on the node (available: {available}); "
            f"pick one with {setting('snapshotter')}"
        )
    return wanted
