"""``nodeload images``: which nodes hold an image name, under which image ID, and whether kubelet
can use it there. Read-only: one short session per node (see :mod:`nodeload.visits`), no lease,
nothing written.

Per node and image record: the record's target, the manifest of the node's platform, the image ID
(the config digest, what CRI and ``kubectl get pod -o yaml``'s ``imageID`` call it), the bytes of
the image's blobs the node's content store holds, whether the layers are unpacked in the
snapshotter CRI uses, and whether CRI reports the record under that ID. Across nodes, a node that
holds another ID than the most recently written copy of the name is marked: it has the old version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from nodeload.containerd.api import images_pb2
from nodeload.containerd.client import DEFAULT_TIMEOUT, ContainerdClient
from nodeload.containerd.connect import ContainerdConnection
from nodeload.errors import NodeloadError
from nodeload.fanout import DEFAULT_PARALLEL
from nodeload.graph import next_document
from nodeload.jsondoc import parse
from nodeload.nodes.spec import NodeSpec
from nodeload.plan import chain_ids
from nodeload.platforms import Platform
from nodeload.reference import parse_reference
from nodeload.session import Session
from nodeload.stores.base import CRI_NAMESPACE
from nodeload.stores.containerd import DEFAULT_SNAPSHOTTER
from nodeload.tasks import together
from nodeload.transports.ssh_connect import SSHOptions
from nodeload.visits import each_node

# Indexes nest, but shallowly: the walk from a record to its config is bounded.
_MAX_DEPTH = 4
_RECORDS_AT_ONCE = 16
_HEX = frozenset("0123456789abcdef")
# Said of a node only ctr import can write (no stream to its socket): images and rm need one.
NEEDS_STREAM = "reading and removing images needs a stream to containerd's socket (forwarding, or socat)"


@dataclass(frozen=True)
class ImagesOptions:
    """Where to look and how to reach the nodes (``nodeload images`` and ``nodeload rm``).

    Attributes:
        namespace: The containerd namespace (k8s.io: kubelet's).
        socket: Use only this containerd socket on every node.
        timeout: containerd's deadline per call.
        parallel: Nodes worked on at once.
    """

    namespace: str = CRI_NAMESPACE
    socket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    parallel: int = DEFAULT_PARALLEL
    ssh: SSHOptions = field(default_factory=SSHOptions)


@dataclass(frozen=True)
class ImageCopy:
    """One image record on one node, as that node holds it.

    Attributes:
        target: The digest the record points at (a manifest, or an index).
        manifest: The manifest of the node's platform (the target itself, unless an index).
        image_id: The config digest: the image ID CRI and kubelet report.
        size: Bytes of the image's blobs (indexes, manifest, config, layers) in the node's store.
        complete: Every one of those blobs is there.
        unpacked: The layers are unpacked in the snapshotter CRI uses (None: no layers known).
        cri: CRI reports the name under ``image_id`` (None: not kubelet's namespace, or no CRI).
        updated_at: When the record was last written (by the node's clock).
        problem: Why the record could not be followed down to its config, if it could not.
    """

    name: str
    target: str
    media_type: str
    manifest: str | None
    image_id: str | None
    size: int
    complete: bool
    unpacked: bool | None
    cri: bool | None
    updated_at: datetime
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields, for ``--json``."""
        return {
            "target": self.target,
            "target_media_type": self.media_type,
            "manifest": self.manifest,
            "image_id": self.image_id,
            "size": self.size,
            "complete": self.complete,
            "unpacked": self.unpacked,
            "cri": self.cri,
            "updated_at": self.updated_at.isoformat(),
            "problem": self.problem,
        }


@dataclass
class NodeImages:
    """What one node holds: its records (by name), or why it could not be asked."""

    node: str
    images: dict[str, ImageCopy] = field(default_factory=dict)
    snapshotter: str | None = None  # CRI's, where unpacked is looked for
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the node was reached and read."""
        return self.error is None


@dataclass(frozen=True)
class Holder:
    """One reached node's answer for one image name: its copy (None: it does not hold the name),
    and whether that copy's ID differs from the name's newest."""

    node: str
    copy: ImageCopy | None
    differs: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"node", "held", "differs", ...the copy's fields}``."""
        fields = self.copy.to_json() if self.copy else {}
        return {"node": self.node, "held": self.copy is not None, "differs": self.differs, **fields}


@dataclass(frozen=True)
class ImageView:
    """One image name across the reached nodes.

    Attributes:
        image_id: The ID of the most recently written copy (the version the others should have).
        holders: Every reached node, in the order given, holding the name or not.
    """

    name: str
    image_id: str | None
    holders: tuple[Holder, ...]

    @property
    def differing(self) -> list[str]:
        """The nodes that hold another ID of the name."""
        return [h.node for h in self.holders if h.differs]

    def to_json(self) -> dict[str, Any]:
        """The image's JSON object."""
        return {
            "name": self.name,
            "image_id": self.image_id,
            "differing_nodes": self.differing,
            "nodes": [h.to_json() for h in self.holders],
        }


@dataclass(frozen=True)
class ImagesReport:
    """``nodeload images``: every image name asked for (or found), and every node's status."""

    namespace: str
    images: tuple[ImageView, ...]
    nodes: tuple[NodeImages, ...]

    @property
    def ok(self) -> bool:
        """True when every node was reached."""
        return all(n.ok for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "namespace": self.namespace,
            "error": None,
            "nodes": [
                {
                    "node": n.node,
                    "status": "ok" if n.ok else "failed",
                    "error": n.error,
                    "snapshotter": n.snapshotter,
                }
                for n in self.nodes
            ],
            "images": [view.to_json() for view in self.images],
        }


def image_names(texts: Sequence[str]) -> list[str]:
    """IMAGE arguments as names on the nodes, normalized as push names them (``app:dev`` is
    ``docker.io/library/app:dev``), each once; CRI's ``sha256:<ID>`` records by their name.

    Raises:
        UsageError: a text that is not an image reference.
    """
    return list(dict.fromkeys(t if is_cri_id_record(t) else parse_reference(t).normalized() for t in texts))


def is_cri_id_record(name: str) -> bool:
    """Whether ``name`` is the ``sha256:<config digest>`` record CRI adds beside each image."""
    algorithm, _, hex_digest = name.partition(":")
    return algorithm == "sha256" and len(hex_digest) == 64 and set(hex_digest) <= _HEX


def compare(names: Sequence[str] | None, nodes: Sequence[NodeImages]) -> list[ImageView]:
    """Each name across the reached nodes (every name some node holds when ``names`` is None),
    marking the nodes whose copy has another ID than the newest copy (latest ``updated_at``)."""
    reached = [n for n in nodes if n.ok]
    if names is None:
        names = sorted({name for n in reached for name in n.images})
    views = []
    for name in names:
        copies = [n.images.get(name) for n in reached]
        held = [c for c in copies if c is not None and c.image_id]
        newest = max(held, key=lambda c: c.updated_at).image_id if held else None
        holders = tuple(
            Holder(n.node, c, differs=c is not None and c.image_id != newest)
            for n, c in zip(reached, copies, strict=True)
        )
        views.append(ImageView(name, newest, holders))
    return views


async def list_images_async(
    names: Sequence[str] | None,
    nodes: Sequence[NodeSpec],
    options: ImagesOptions,
    session: Session | None = None,
) -> ImagesReport:
    """What every node holds of ``names`` (normalized: see :func:`image_names`; None: every
    image of the namespace but CRI's ``sha256:`` ID records of images that have a name)."""
    results = {node.name: NodeImages(node.name) for node in nodes}

    async def work(node: NodeSpec, connection: ContainerdConnection) -> None:
        found = results[node.name]
        found.snapshotter, found.images = await read_node(connection, options.namespace, names)

    errors = await each_node(
        nodes,
        work,
        what="listing images",
        ssh=options.ssh,
        socket=options.socket,
        timeout=options.timeout,
        parallel=options.parallel,
        session=session,
        without_relay=NEEDS_STREAM,
    )
    for node, error in zip(nodes, errors, strict=True):
        results[node.name].error = error
    ordered = tuple(results[node.name] for node in nodes)
    return ImagesReport(options.namespace, tuple(compare(names, ordered)), ordered)


async def read_node(
    connection: ContainerdConnection, namespace: str, names: Sequence[str] | None
) -> tuple[str, dict[str, ImageCopy]]:
    """The snapshotter CRI uses on the node, and its copies of ``names`` (None: see
    :func:`_listed`) in ``namespace``."""
    client = connection.client.bound(namespace)
    info = connection.info
    snapshotter = info.cri_snapshotter or DEFAULT_SNAPSHOTTER
    records = {r.name: r for r in await client.images()}
    wanted = _listed(records) if names is None else names
    sizes = await client.content_sizes()
    cri = namespace == CRI_NAMESPACE and info.has_cri
    held = [records[name] for name in wanted if name in records]
    # Several records at once: on a distant node, one by one would pay round trips per record.
    gate = asyncio.Semaphore(_RECORDS_AT_ONCE)

    async def one(record: images_pb2.Image) -> ImageCopy:
        async with gate:
            return await describe(client, record, info.platform, sizes, snapshotter, cri)

    copies = await together(*(one(record) for record in held))
    return snapshotter, {copy.name: copy for copy in copies}


def _listed(records: dict[str, images_pb2.Image]) -> list[str]:
    """Every record but CRI's ID records of images that still have a name: an ID record whose
    target no name points at is shown (a tag moved away from it, and it still holds the old one)."""
    named = {r.target.digest for n, r in records.items() if not is_cri_id_record(n)}
    return [n for n, r in records.items() if not is_cri_id_record(n) or r.target.digest not in named]


async def describe(
    client: ContainerdClient,
    record: images_pb2.Image,
    platform: Platform,
    sizes: dict[str, int],
    snapshotter: str,
    cri: bool,
) -> ImageCopy:
    """One record followed down to the config of ``platform``: what it is and how the node holds it."""
    target = record.target
    updated = record.updated_at.ToDatetime(tzinfo=UTC)
    blobs = [target.digest]
    manifest: str | None = None
    config: str | None = None
    diff_ids: list[str] = []
    problem = None
    try:
        digest = target.digest
        for _ in range(_MAX_DEPTH):
            data = await client.read_document(digest)
            step = next_document(data, digest, platform)
            if step is None:
                raise NodeloadError(f"{digest} is neither an index nor a manifest")
            kind, digest = step
            blobs.append(digest)
            if kind == "config":
                manifest = blobs[-2]
                blobs += [layer.text("digest") for layer in parse(data, manifest).objs("layers")]
                config = digest
                rootfs = parse(await client.read_document(config), config).opt_obj("rootfs")
                diff_ids = rootfs.texts("diff_ids") if rootfs else []
                break
        else:
            raise NodeloadError(f"{target.digest}: indexes nested too deeply")
    except (NodeloadError, grpc.aio.AioRpcError) as err:
        problem = f"cannot follow the record to its config: {err}"
    unpacked = None
    if diff_ids:
        try:
            unpacked = await client.snapshot_exists(snapshotter, chain_ids(diff_ids)[-1])
        except grpc.aio.AioRpcError:  # no such snapshotter on this node: not unpacked there
            unpacked = False
    seen = cri and config is not None and await client.cri_image_id(record.name) == config
    return ImageCopy(
        name=record.name,
        target=target.digest,
        media_type=target.media_type,
        manifest=manifest,
        image_id=config,
        size=sum(sizes.get(d, 0) for d in dict.fromkeys(blobs)),
        complete=problem is None and all(d in sizes for d in blobs),
        unpacked=unpacked,
        cri=seen if cri else None,
        updated_at=updated,
        problem=problem,
    )
