"""Decide, without any I/O, what one node needs: the blob plan.

Given an image graph and what the node already holds, :func:`make_plan`
says which blobs to send, which labels to set, which layers to unpack and
what the image record points at. Everything here is pure and unit-tested.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nodeload.graph import Document, ImageGraph
from nodeload.image import Descriptor, canonical_json, descriptor_for

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_GC_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot"


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The snapshot chain IDs of a layer stack (OCI image spec)."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


@dataclass(frozen=True)
class NodeState:
    """What the node already has, as far as this image is concerned."""

    present: frozenset[str]  # blob digests in the content store
    equivalents: Mapping[str, Descriptor] = field(default_factory=dict)  # diffID -> blob the node has
    snapshots: frozenset[str] = frozenset()  # committed chain IDs
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # of present blobs, when known


@dataclass(frozen=True)
class BlobStep:
    """One blob: send it (unless present) and make sure it carries ``labels``."""

    desc: Descriptor
    present: bool
    labels: Mapping[str, str]
    data: bytes | None = None  # set for documents we hold in memory (possibly rewritten)


@dataclass(frozen=True)
class UnpackStep:
    """Apply ``layer`` on snapshot ``parent`` and commit it as ``chain_id``."""

    layer: Descriptor
    diff_id: str
    parent: str
    chain_id: str


@dataclass(frozen=True)
class Plan:
    """Everything a store does for one node, in order."""

    blobs: tuple[BlobStep, ...]
    unpack: tuple[UnpackStep, ...]
    root: Descriptor
    config_digest: str
    snapshot_label: tuple[str, str]  # label key/value for the config once unpacked

    @property
    def to_send(self) -> tuple[BlobStep, ...]:
        """Blobs the node lacks."""
        return tuple(b for b in self.blobs if not b.present)

    @property
    def bytes_to_send(self) -> int:
        """Blob bytes the node lacks."""
        return sum(b.desc.size for b in self.to_send)

    @property
    def bytes_skipped(self) -> int:
        """Blob bytes the node already holds."""
        return sum(b.desc.size for b in self.blobs if b.present)


def make_plan(graph: ImageGraph, state: NodeState, snapshotter: str, rewritable: bool) -> Plan:
    """Plan the push of ``graph`` onto a node in ``state``.

    Layers the node lacks but holds under another compressed digest (same
    uncompressed content) are swapped in when the manifest is ours to rewrite,
    so they are not sent again. Blobs are ordered children first: a manifest
    is only written once everything it references exists.
    """
    layers = list(graph.layers)
    manifest, indexes = graph.manifest, list(graph.indexes)
    if rewritable and not indexes:
        swapped = _swap_equivalent_layers(layers, graph.diff_ids, state)
        if swapped != layers:
            layers = swapped
            manifest = _rewrite_manifest(manifest, layers)
    chains = chain_ids(graph.diff_ids)
    steps: list[BlobStep] = []
    # Layers get their containerd.io/uncompressed label once unpacking has verified it.
    steps.extend(_step(layer, state, {}) for layer in layers)
    steps.append(_step(graph.config.desc, state, {}, graph.config.data))
    steps.append(_step(manifest.desc, state, manifest_labels(graph.config.desc, layers), manifest.data))
    child = manifest.desc
    for index, chosen in reversed(indexes):
        steps.append(_step(index.desc, state, {f"{LABEL_GC_CONTENT}.m.{chosen}": child.digest}, index.data))
        child = index.desc
    root = indexes[0][0].desc if indexes else manifest.desc
    return Plan(
        blobs=_dedupe(steps),
        unpack=tuple(_unpack_steps(layers, graph.diff_ids, chains, state.snapshots)),
        root=root,
        config_digest=graph.config.desc.digest,
        snapshot_label=_snapshot_label(graph.config.desc.digest, snapshotter, chains, state),
    )


def _snapshot_label(
    config: str, snapshotter: str, chains: Sequence[str], state: NodeState
) -> tuple[str, str]:
    """The label that keeps the image's top snapshot, to set on its config ("" when it is there)."""
    key = f"{LABEL_GC_SNAPSHOT}.{snapshotter}"
    wanted = chains[-1] if chains else ""
    return key, "" if state.labels.get(config, {}).get(key) == wanted else wanted


def manifest_labels(config: Descriptor, layers: Sequence[Descriptor]) -> dict[str, str]:
    """The GC references containerd puts on a manifest: its config and layers."""
    labels = {f"{LABEL_GC_CONTENT}.config": config.digest}
    for i, layer in enumerate(layers):
        labels[f"{LABEL_GC_CONTENT}.l.{i}"] = layer.digest
    return labels


def _step(
    desc: Descriptor, state: NodeState, labels: Mapping[str, str], data: bytes | None = None
) -> BlobStep:
    present = desc.digest in state.present
    return BlobStep(desc, present, _unset(desc.digest, labels, state) if present else dict(labels), data)


def _unset(digest: str, labels: Mapping[str, str], state: NodeState) -> dict[str, str]:
    """The labels a present blob does not carry yet (setting one is a metadata write)."""
    held = state.labels.get(digest, {})
    return {k: v for k, v in labels.items() if held.get(k) != v}


def _dedupe(steps: list[BlobStep]) -> tuple[BlobStep, ...]:
    """A blob listed twice (the same layer used twice) is sent once, labels merged."""
    merged: dict[str, BlobStep] = {}
    for step in steps:
        if step.desc.digest in merged:
            first = merged[step.desc.digest]
            merged[step.desc.digest] = BlobStep(
                first.desc, first.present, {**first.labels, **step.labels}, first.data
            )
        else:
            merged[step.desc.digest] = step
    return tuple(merged.values())


def _swap_equivalent_layers(
    layers: list[Descriptor], diff_ids: Sequence[str], state: NodeState
) -> list[Descriptor]:
    out = []
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        twin = state.equivalents.get(diff_id)
        out.append(twin if layer.digest not in state.present and twin is not None else layer)
    return out


def _rewrite_manifest(manifest: Document, layers: Sequence[Descriptor]) -> Document:
    doc = json.loads(manifest.data)
    doc["layers"] = [layer.to_json() for layer in layers]
    data = canonical_json(doc)
    return Document(descriptor_for(manifest.desc.media_type, data), data)


def _unpack_steps(
    layers: Sequence[Descriptor], diff_ids: Sequence[str], chains: Sequence[str], have: frozenset[str]
) -> list[UnpackStep]:
    # A committed chain implies all of its parents: resume above the highest one.
    start = 0
    for i in range(len(chains) - 1, -1, -1):
        if chains[i] in have:
            start = i + 1
            break
    return [
        UnpackStep(layers[i], diff_ids[i], chains[i - 1] if i else "", chains[i])
        for i in range(start, len(layers))
    ]
