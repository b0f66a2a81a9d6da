"""Which of a node's objects a push adds to its lease: the fewest that keep all it relies on.

containerd's garbage collector keeps what a lease references *and what that references in
turn*: a manifest's ``containerd.io/gc.ref.content.*`` labels keep its config and layers, a
config's ``containerd.io/gc.ref.snapshot.<snapshotter>`` label keeps its snapshot, and a
snapshot keeps its parents. Each reference added to a lease is a metadata transaction (an
fsync) on the node, so pinning one manifest that already refers to the image's blobs costs
one where pinning every blob and snapshot costs a dozen, on every push.

Blobs the push writes need no pin: containerd leases what it commits (and a blob that turns
out to exist already) under the writer's lease. Pure: the store looks, pins, then looks
again to be sure nothing went away in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodeload.plan import LABEL_GC_CONTENT, LABEL_GC_SNAPSHOT

Labels = Mapping[str, Mapping[str, str]]  # digest -> the labels containerd holds for it
_GC_REFERENCE = "containerd.io/gc.ref."


@dataclass(frozen=True)
class Pins:
    """References to add to the push's lease."""

    digests: tuple[str, ...]
    snapshot: str | None = None  # the highest committed chain, when no pinned blob refers to it
    labelled: frozenset[str] = frozenset()  # blobs whose labels do the keeping: must not change


def references(labels: Mapping[str, str], snapshotter: str) -> tuple[set[str], set[str]]:
    """The blobs and the snapshots (of ``snapshotter``) that GC labels make an object keep."""
    snapshots_key = f"{LABEL_GC_SNAPSHOT}.{snapshotter}"
    content = {v for k, v in labels.items() if _refers(k, LABEL_GC_CONTENT, "./")}
    snapshots = {v for k, v in labels.items() if _refers(k, snapshots_key, "/")}
    return content, snapshots


def _refers(key: str, prefix: str, separators: str) -> bool:
    """containerd's rule: the label itself, or the label followed by a separator and a name."""
    return key == prefix or (key.startswith(prefix) and key[len(prefix)] in separators)


def choose_pins(
    needed: Sequence[str],
    labels: Labels,
    snapshotter: str,
    top: str | None = None,
    roots: Sequence[str] = (),
    pinned: frozenset[str] = frozenset(),
    top_pinned: bool = False,
) -> Pins:
    """The fewest references that keep ``needed`` blobs and the ``top`` committed snapshot.

    Args:
        needed: Blobs on the node the plan relies on (it will not send them).
        labels: The labels of every blob looked at (``needed`` and what ``roots`` refer to).
        snapshotter: Whose snapshot labels count.
        top: The highest committed chain the plan builds on, if any. Only a label naming it
            keeps it: the chains above it are not committed, and others' chains are unknown.
        roots: Other blobs on the node that may refer to them (the image the name points at).
        pinned: Blobs the lease holds already.
        top_pinned: Whether the lease holds ``top`` already.
    """
    uncovered = set(needed) - pinned
    snapshot_kept = top is None or top_pinned
    chosen: list[str] = []
    labelled: set[str] = set()
    candidates = list(dict.fromkeys([*needed, *roots]))
    while uncovered or not snapshot_kept:
        best, best_gain, best_keeps = None, 0, False
        for candidate in candidates:
            blobs, snapshots = _closure(candidate, labels, snapshotter)
            keeps = not snapshot_kept and top in snapshots
            gain = len(blobs & uncovered) + keeps
            if gain > best_gain:
                best, best_gain, best_keeps = candidate, gain, keeps
        if best is None:
            break  # only the snapshot is left, and no blob refers to it
        chosen.append(best)
        candidates.remove(best)
        kept = _closure(best, labels, snapshotter)[0]
        uncovered -= kept
        labelled |= kept
        snapshot_kept = snapshot_kept or best_keeps
    return Pins(tuple(chosen), None if snapshot_kept else top, frozenset(labelled))


def _closure(root: str, labels: Labels, snapshotter: str) -> tuple[set[str], set[str]]:
    """Every blob ``root`` keeps (itself included) and every snapshot they refer to."""
    blobs, snapshots, queue = {root}, set(), [root]
    while queue:
        content, snaps = references(labels.get(queue.pop(), {}), snapshotter)
        snapshots |= snaps
        queue += content - blobs
        blobs |= content
    return blobs, snapshots


def gc_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that make containerd's GC keep other objects (the ones a plan relies on)."""
    return {k: v for k, v in labels.items() if k.startswith(_GC_REFERENCE)}
