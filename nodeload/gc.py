"""``nodeload gc``: reclaim what interrupted runs left on nodes.

Per node and namespace: nodeload's leases whose run is gone (see :func:`nodeload.leftovers.abandoned`)
are deleted, so containerd's garbage collector may take what only they pinned; nodeload's
unfinished uploads that have not moved for a while are aborted, giving their disk back. A live
push, from this machine or another, is left alone: its lease's process is alive, or its lease
and uploads are younger than ``older_than``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nodeload.containerd.client import DEFAULT_TIMEOUT, ContainerdClient
from nodeload.containerd.connect import ContainerdConnection
from nodeload.fanout import DEFAULT_PARALLEL
from nodeload.leftovers import DEFAULT_OLDER_THAN, abandoned, stale
from nodeload.nodes.spec import NodeSpec
from nodeload.session import Session
from nodeload.transports.ssh_connect import SSHOptions
from nodeload.visits import each_node


@dataclass(frozen=True)
class GcOptions:
    """What to collect and how to reach the nodes.

    Attributes:
        namespaces: Namespaces to look in (empty: every namespace of each node).
        older_than: Leases of runs that cannot be checked (another machine's) and uploads that
            have not moved for this long are abandoned.
        dry_run: List what would be reclaimed, change nothing.
    """

    namespaces: tuple[str, ...] = ()
    older_than: timedelta = DEFAULT_OLDER_THAN
    dry_run: bool = False
    socket: str | None = None  # use only this containerd socket on every node
    timeout: float = DEFAULT_TIMEOUT
    parallel: int = DEFAULT_PARALLEL
    ssh: SSHOptions = field(default_factory=SSHOptions)


@dataclass(frozen=True)
class Reclaimed:
    """One lease or upload, and why it is nodeload's to reclaim."""

    namespace: str
    kind: str  # "lease" | "ingest"
    id: str
    reason: str
    bytes: int = 0  # what an upload holds on the node's disk


@dataclass
class GcResult:
    """What was (or, with ``dry_run``, would be) reclaimed on one node."""

    node: str
    reclaimed: list[Reclaimed] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the node was reached and looked through."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The JSON object for ``--json``."""
        return {
            "node": self.node,
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "reclaimed": [vars(r) for r in self.reclaimed],
        }


async def collect(
    nodes: Sequence[NodeSpec], options: GcOptions, session: Session | None = None
) -> list[GcResult]:
    """Reclaim abandoned leases and uploads on every node; one result per node, in order.
    ``session``: its kept connections are used (default: each node is connected afresh)."""
    results = {node.name: GcResult(node.name) for node in nodes}

    async def work(node: NodeSpec, connection: ContainerdConnection) -> None:
        await _collect_client(connection.client, node, options, results[node.name])

    errors = await each_node(
        nodes,
        work,
        what="listing or removing leftovers",
        ssh=options.ssh,
        socket=options.socket,
        timeout=options.timeout,
        parallel=options.parallel,
        session=session,
        without_relay="ctr import is the only way to write this node, and ctr manages its own leases "
        "there; there is nothing of nodeload's to collect",
    )
    for node, error in zip(nodes, errors, strict=True):
        results[node.name].error = error
    return [results[node.name] for node in nodes]


async def _collect_client(
    client: ContainerdClient, node: NodeSpec, options: GcOptions, result: GcResult
) -> None:
    namespaces = options.namespaces or tuple(await client.namespace_names())
    now = datetime.now(UTC)
    for namespace in namespaces:
        client.namespace = namespace
        for lease in await client.leases():
            reason = abandoned(lease, now, options.older_than, frozenset(client.held))
            if reason:
                result.reclaimed.append(Reclaimed(namespace, "lease", lease.id, reason))
                if not options.dry_run:
                    await client.delete_lease(lease.id)
        for ingest in await client.ingests():
            if stale(ingest, now, options.older_than):
                idle = int((now - ingest.updated).total_seconds())
                reason = f"an upload idle for {idle} s ({ingest.offset} of {ingest.total} bytes)"
                result.reclaimed.append(Reclaimed(namespace, "ingest", ingest.ref, reason, ingest.offset))
                if not options.dry_run:
                    await client.abort(ingest.ref)
