"""``nodeload rm``: delete image records on the nodes so that containerd's garbage collector
reclaims what nothing else uses.

Per node: the records named, and the entries CRI keeps beside them (its ``sha256:<image ID>``
record and ``repo@digest`` records of the same target) unless another record that stays points
at that target (then the image stays, under its other name). An image that a container uses is
refused (kubelet's live containers, from CRI's own list; a container record of ctr or nerdctl
made from the name) unless ``force``. The last deletion runs containerd's garbage collection
before it answers, and what was freed is measured: the bytes of the namespace's content that
are gone afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from nodeload.containerd.api import cri_pb2
from nodeload.containerd.client import ContainerdClient
from nodeload.containerd.connect import ContainerdConnection
from nodeload.errors import NodeError
from nodeload.node_images import NEEDS_STREAM, ImagesOptions, describe
from nodeload.nodes.spec import NodeSpec
from nodeload.session import Session
from nodeload.stores.base import CRI_NAMESPACE
from nodeload.stores.containerd import DEFAULT_SNAPSHOTTER
from nodeload.visits import each_node
from nodeload.wording import setting

# CRI labels the containerd records of the containers and sandboxes it makes with this.
_CRI_KIND_LABEL = "io.cri-containerd.kind"
_POD_NAME, _POD_NAMESPACE = "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"


@dataclass(frozen=True)
class RemoveOptions(ImagesOptions):
    """:class:`~nodeload.node_images.ImagesOptions`, and:

    Attributes:
        force: Remove an image even while containers use it.
        dry_run: Say what would be removed (and refused), change nothing.
    """

    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class User:
    """A container made from an image: kubelet's (``cri``, not exited) or a container record of
    ctr, nerdctl... (``containerd``, running or not)."""

    kind: str
    id: str
    name: str
    state: str
    pod: str | None = None  # namespace/name, for kubelet's


@dataclass
class Removal:
    """One image name on one node.

    Attributes:
        status: ``removed``, ``would-remove`` (dry run), ``refused`` (in use) or ``absent``.
        records: The records deleted (or that would be): the name and CRI's entries for it.
    """

    name: str
    status: str
    image_id: str | None = None
    records: list[str] = field(default_factory=list)
    used_by: list[User] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The removal's JSON object."""
        return {**vars(self), "used_by": [vars(u) for u in self.used_by]}


@dataclass
class RemoveResult:
    """What ``rm`` did on one node; ``freed_bytes``: the bytes of the namespace's content gone
    after containerd's collection (0 when nothing was deleted, None on a dry run)."""

    node: str
    images: list[Removal] = field(default_factory=list)
    freed_bytes: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Reached, and nothing refused."""
        return self.error is None and all(r.status != "refused" for r in self.images)

    def to_json(self) -> dict[str, Any]:
        """The node's JSON object."""
        status = "failed" if self.error else "ok" if self.ok else "refused"
        return {
            "node": self.node,
            "status": status,
            "error": self.error,
            "freed_bytes": self.freed_bytes,
            "images": [r.to_json() for r in self.images],
        }


def records_to_delete(
    targets: Mapping[str, str], names: Sequence[str], ids: Mapping[str, str | None]
) -> dict[str, list[str]]:
    """For each name the namespace holds (``targets``: every record's target digest), the records
    that go with it: itself, and CRI's entries for it (the ``sha256:<ID>`` record named by ``ids``,
    ``repo@digest`` records of its target) unless a record that stays points at that target."""
    removing = {n for n in names if n in targets}
    plan: dict[str, list[str]] = {}
    taken: set[str] = set()
    for name in (n for n in names if n in targets):
        target = targets[name]
        entries = {
            r
            for r, t in targets.items()
            if r not in removing and (r == ids.get(name) or (t == target and "@" in r))
        }
        staying = [r for r, t in targets.items() if t == target and r not in removing and r not in entries]
        records = [name, *sorted(entries - taken)] if not staying else [name]
        taken.update(records)
        plan[name] = records
    return plan


def users(
    records: Iterable[str],
    image_id: str | None,
    cri: Sequence[cri_pb2.Container],
    plain: Iterable[tuple[str, str, str]],
) -> list[User]:
    """The containers that use an image whose ``records`` go: kubelet's (not exited) whose image
    or image ref is one of them or, when CRI's ID record goes, the image ID; and container records
    (id, image, state) made from one of them."""
    gone = set(records)
    refs = gone | ({image_id} if image_id and image_id in gone else set())
    found = [
        User(
            "cri",
            c.id,
            c.metadata.name,
            cri_pb2.ContainerState.Name(c.state).removeprefix("CONTAINER_").lower(),
            f"{c.labels[_POD_NAMESPACE]}/{c.labels[_POD_NAME]}" if _POD_NAME in c.labels else None,
        )
        for c in cri
        if c.state != cri_pb2.CONTAINER_EXITED and (c.image_ref in refs or c.image.image in refs)
    ]
    found += [User("containerd", cid, cid, state) for cid, image, state in plain if image in gone]
    return found


async def remove_images_async(
    names: Sequence[str],
    nodes: Sequence[NodeSpec],
    options: RemoveOptions,
    session: Session | None = None,
) -> list[RemoveResult]:
    """Remove ``names`` (normalized: see :func:`nodeload.node_images.image_names`) on every node;
    one result per node, in order."""
    results = {node.name: RemoveResult(node.name) for node in nodes}

    async def work(node: NodeSpec, connection: ContainerdConnection) -> None:
        await remove_on_node(connection, names, options, results[node.name])

    errors = await each_node(
        nodes,
        work,
        what="removing images",
        ssh=options.ssh,
        socket=options.socket,
        timeout=options.timeout,
        parallel=options.parallel,
        session=session,
        without_relay=NEEDS_STREAM,
    )
    for node, error in zip(nodes, errors, strict=True):
        results[node.name].error = error
    return [results[node.name] for node in nodes]


async def remove_on_node(
    connection: ContainerdConnection, names: Sequence[str], options: RemoveOptions, result: RemoveResult
) -> None:
    """Remove ``names`` on one node, filling ``result`` as it goes."""
    client = connection.client.bound(options.namespace)
    info = connection.info
    records = {r.name: r for r in await client.images()}
    before = await client.content_sizes()
    ids: dict[str, str | None] = {}
    for name in names:
        if name in records:
            found = await describe(
                client, records[name], info.platform, before, DEFAULT_SNAPSHOTTER, cri=False
            )
            ids[name] = found.image_id
    plan = records_to_delete({n: r.target.digest for n, r in records.items()}, names, ids)
    cri = await _cri_containers(client, options) if info.has_cri and plan else []
    plain = await _plain_containers(client) if plan else []
    deleting: list[str] = []
    for name in names:
        if name not in plan:
            result.images.append(Removal(name, "absent"))
            continue
        using = users(plan[name], ids[name], cri, plain)
        refused = bool(using) and not options.force
        status = "refused" if refused else "would-remove" if options.dry_run else "removed"
        result.images.append(Removal(name, status, ids[name], plan[name], using))
        if not refused and not options.dry_run:
            deleting += plan[name]
    if options.dry_run:
        return
    result.freed_bytes = 0
    if deleting:
        for i, record in enumerate(deleting):
            # The last deletion runs the garbage collection before it answers.
            await client.delete_image(record, sync=i == len(deleting) - 1)
        after = await client.content_sizes()
        result.freed_bytes = sum(size for digest, size in before.items() if digest not in after)


async def _cri_containers(client: ContainerdClient, options: RemoveOptions) -> list[cri_pb2.Container]:
    """kubelet's containers (only in its namespace; elsewhere CRI runs none).

    Raises:
        NodeError: CRI would not list them (then only ``force`` removes).
    """
    if options.namespace != CRI_NAMESPACE:
        return []
    try:
        return await client.cri_containers()
    except grpc.aio.AioRpcError as err:
        if options.force:
            return []
        raise NodeError(
            f"cannot tell which images kubelet's containers use: CRI would not list them "
            f"({err.code().name}: {err.details()}); {setting('force')} removes without that check"
        ) from err


async def _plain_containers(client: ContainerdClient) -> list[tuple[str, str, str]]:
    """(id, image, state) of the namespace's container records that CRI did not make."""
    return [(c.id, c.image, "record") for c in await client.containers() if _CRI_KIND_LABEL not in c.labels]
