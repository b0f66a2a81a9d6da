"""What one run of ``nodeload serve`` accepts from its clients, broken or hostile ones included.

The endpoint answers only the run's credentials on loopback, but what it is fed (an image
layout downloaded from somewhere, a build tool gone wrong) is not trusted: every piece of
work a request can cause, and every piece of state it can leave, is bounded here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The bounds of one endpoint (the defaults are what ``nodeload serve`` uses)."""

    # A request body that brings less than ``stall_bytes`` in ``stall_seconds`` of waiting for
    # it is cut (408): a client trickling a byte at a time would otherwise hold an upload, and
    # each node's ingest, forever. 64 KiB in 30 s is ~2 KiB/s, far below any working client;
    # time spent waiting for slow nodes is not counted against the client.
    stall_seconds: float = 30.0
    stall_bytes: int = 64 * 1024
    # Uploads open at once. Clients upload a few blobs in parallel (docker 5, skopeo and crane
    # 4-6); 64 leaves room for several clients in one wrapped command. Each open upload holds a
    # Write stream on every node, so past the bound uploads idle for ``stall_seconds`` are
    # dropped (the spec lets unfinished uploads time out), and failing that the client gets 429.
    uploads: int = 64
    # What the nodes answered to blob HEADs, kept to decide whether an upload can stream to every
    # node. Past the bound the oldest answer is forgotten, which at worst sends a blob again to a
    # node that had it; refusing HEADs instead would fail a push over bookkeeping.
    head_records: int = 4096
    # Descriptors a pushed manifest may name, through its nested indexes, counting repeats: its
    # layers and config, or an index's manifests and their configs. The largest real images name
    # a few hundred (buildx indexes of ~10 platforms plus their attestations; at most ~127 layers
    # in a runnable image); each one costs a containerd call per node.
    references: int = 1000
    # Documents from the pushed manifest down to the last manifest, as the push path resolves
    # images (graph.resolve): three levels of index above a manifest.
    nesting: int = 4
    # Bytes of the manifests, indexes and configs read for one pushed manifest (held in memory).
    document_bytes: int = 64 * 1024 * 1024
