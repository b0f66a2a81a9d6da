"""What every image store (a node's containerd, a node's Docker engine) is given and promises.

A store is opened over a :class:`~nodeload.transports.base.Transport` (a byte stream to a
socket on one node) and then takes one prepared image after another. It knows its store's
protocol and nothing about SSH or about where nodes come from.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from nodeload.errors import NodeloadError, PushFailed
from nodeload.graph import ImageGraph, next_document, resolve
from nodeload.image import ImageSource
from nodeload.nodes.spec import ClusterMirror, NodeSpec
from nodeload.platforms import Platform
from nodeload.progress import ProgressSink
from nodeload.reference import parse_reference
from nodeload.transports.base import Transport
from nodeload.transports.execs import Executor
from nodeload.wording import setting

if TYPE_CHECKING:
    from nodeload.mirror import Mirror

CRI_NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class WriteOptions:
    """What the user asked for, per image."""

    namespace: str = CRI_NAMESPACE
    name: str = ""
    platform: Platform | None = None
    snapshotter: str | None = None
    unpack: bool = True
    # The name came from inside the source (RepoTags, annotations), not from the user: it may
    # not move an existing record to other content (an archive naming itself pause:3.9...).
    name_from_source: bool = False


@dataclass(frozen=True)
class PreparedImage:
    """An opened source with the per-push settings that depend on it (its name, say).

    The graph of each platform is resolved once, whatever the number of nodes.
    """

    source: ImageSource
    options: WriteOptions
    export: str | None = None  # how a Docker-engine image left the engine (for reports)
    _graphs: dict[Platform, ImageGraph] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def graph(self, platform: Platform) -> ImageGraph:
        """Index -> manifest -> config + layers for ``platform`` (blocking: call from a thread)."""
        key = platform.normalized()
        with self._lock:
            if key not in self._graphs:
                self._graphs[key] = resolve(self.source, key)
            return self._graphs[key]


def check_name(options: WriteOptions, pushed: str, existing: str | None, *, same_image: bool = False) -> None:
    """Refuse names that would make the node lie about what an image is.

    Args:
        options: The name and where it came from.
        pushed: The digest the image record would point at.
        existing: The digest the name points at on the node now (None: no such image).
        same_image: The record now points at an image of the same config (image ID) as the one
            pushed, under another manifest (the same image from another kind of archive, say):
            moving it changes nothing kubelet runs.

    Raises:
        PushFailed: a digest-pinned name for other content, or a name taken from inside the
            source that already names another image on the node.
    """
    pinned = parse_reference(options.name).digest
    if pinned and pinned != pushed:
        raise PushFailed(
            f"refusing the name {options.name}: it pins {pinned}, but the image pushed is "
            f"{pushed}; a digest-pinned reference must resolve to that digest"
        )
    if options.name_from_source and existing is not None and existing != pushed and not same_image:
        raise PushFailed(
            f"{options.name} already exists on the node as {existing}, and this name comes from inside "
            "the source, not from you: nodeload will not repoint it. To replace that image, name it "
            f"yourself: {setting('name', options.name)}"
        )


async def same_image(
    read: Callable[[str], Awaitable[bytes]],
    existing: str | None,
    pushed: str,
    config: str,
    platform: Platform,
) -> bool:
    """Whether the record at ``existing`` (a manifest other than ``pushed``) names an image of the
    same ``config`` for ``platform``, read from the node with ``read``: moving it to ``pushed``
    then changes nothing kubelet runs (see check_name)."""
    if existing is None or existing == pushed:
        return False
    return await _image_id(read, existing, platform) == config


async def _image_id(read: Callable[[str], Awaitable[bytes]], root: str, platform: Platform) -> str | None:
    """The config digest (the image ID CRI shows) of the image ``root`` names for ``platform``, read
    with ``read``; None when the node cannot say (a document missing or not an image)."""
    digest = root
    for _ in range(4):  # as deep as graph.resolve walks
        try:
            step = next_document(await read(digest), digest, platform)
        except NodeloadError:
            return None
        if step is None:
            return None
        kind, digest = step
        if kind == "config":
            return digest
    return None


class Seeded:
    """Whether the seed nodes of a run got one image: peers wait for it before pulling from them."""

    def __init__(self, seeds: int) -> None:
        """Wait for ``seeds`` seed nodes."""
        self._left, self._ok = seeds, False
        self._done = asyncio.Event()
        if seeds == 0:
            self._done.set()

    def seed_finished(self, ok: bool) -> None:
        """A seed node is done with the image (``ok``: it has it)."""
        self._ok |= ok
        self._left -= 1
        if self._left <= 0:
            self._done.set()

    async def wait_ok(self) -> bool:
        """Wait for every seed; whether any has the image."""
        await self._done.wait()
        return self._ok


@dataclass(frozen=True)
class PeerPull:
    """What a peer node needs to pull an image from the seeds through its registry mirror."""

    seeded: Seeded
    executor: Executor | None  # reads the node's mirror configuration
    check: bool = True  # False: trust the node has a mirror without reading its configuration
    cluster: ClusterMirror | None = None  # the node's Spegel pod, when the Kubernetes API told
    # Held while waiting for the seeds: gives the node's place among those worked on to another.
    idle: Callable[[], AbstractAsyncContextManager[None]] | None = None

    async def wait_for_seeds(self) -> bool:
        """Wait for the seed nodes; whether any of them got the image."""
        if self.idle is None:
            return await self.seeded.wait_ok()
        async with self.idle():
            return await self.seeded.wait_ok()

    async def mirror_for(self, host: str) -> Mirror | str:
        """The mirror the node pulls ``host`` through, or why it cannot (for the report)."""
        from nodeload.mirror import mirror_for

        return await mirror_for(self.executor, self.cluster, host)


@runtime_checkable
class SeedCandidate(Protocol):
    """A store that can tell how much of an image its node lacks (seed nodes are chosen by it)."""

    async def missing_bytes(self, image: PreparedImage, namespace: str) -> int:
        """Bytes of ``image`` the node does not hold."""
        ...


@dataclass
class Written:
    """What this run has written of one image to one node, over every attempt: the retry
    bookkeeping. Fan-out keeps one per image and node for the whole run; a store adds to it as
    bytes go out and reads it on a retry, so that a blob an earlier attempt completed counts as
    sent (not found) and the bytes an earlier attempt left in an interrupted upload are not
    counted as resumed from an earlier run.

    Attributes:
        bytes: Every byte written, failed attempts included.
        blobs: The blobs written completely.
        partial: Bytes of each blob that failed attempts wrote before failing.
        resumed: Bytes found on the node in uploads an earlier run left unfinished.
    """

    bytes: int = 0
    blobs: set[str] = field(default_factory=set)
    partial: dict[str, int] = field(default_factory=dict)
    resumed: int = 0


@dataclass
class Delivery:
    """What a store did with one image on one node, in the attempt that finished it.

    Attributes:
        digest: What the image record points at.
        image_id: The image's ID: the digest of its config (what kubelet reports as imageID).
        platform: The platform written.
        blobs_total: Blobs of the image for that platform.
        blobs_skipped: Of those, the ones the node held before this run (not sent).
        bytes_skipped: Their bytes.
        layers_unpacked: Layers this attempt unpacked.
        cri_indexed: Whether CRI (kubelet's view) knows the image; None where it does not apply.
        delivered_by: ``push``, or ``peer-pull``: pulled from seed nodes through the cluster's mirror.
        warnings: What the user should know.
        timings: Seconds per phase (plan, write, unpack, record, pull).
    """

    digest: str = ""
    image_id: str = ""
    platform: str = ""
    blobs_total: int = 0
    blobs_skipped: int = 0
    bytes_skipped: int = 0
    layers_unpacked: int = 0
    cri_indexed: bool | None = None
    delivered_by: Literal["push", "peer-pull"] = "push"
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``timings[phase]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.monotonic() - start, 4)


@dataclass(frozen=True)
class StoreInfo:
    """What a node's image store says of itself, for reports.

    Attributes:
        socket: The socket written through.
        version: The store's version (``1.7.13``, ``docker 24.0.7``).
        reach: How the socket is reached (``ssh-forward``, ``ssh-exec:sudo:socat``, ``ctr-import``...).
    """

    socket: str
    version: str
    reach: str


class ImageStore(Protocol):
    """One node's image store, connected and ready to take images."""

    @property
    def about(self) -> StoreInfo:
        """What the store says of itself."""
        ...

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        """Write ``image`` with ``options`` (the image's, adjusted for this node), adding what
        goes out to ``written``; what was done.

        Raises:
            NodeloadError: on anything the user must act on.
        """
        ...


class StoreOpener(Protocol):
    """Connects a store through a node's transport, for the duration of a ``with`` block."""

    def __call__(
        self, transport: Transport, node: NodeSpec, progress: ProgressSink
    ) -> AbstractAsyncContextManager[ImageStore]:
        """Open the node's store (raises NodeloadError subclasses the user can act on)."""
        ...
