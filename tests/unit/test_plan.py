import hashlib
import json

from nodeload.graph import Document, ImageGraph
from nodeload.image import (
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    canonical_json,
    descriptor_for,
)
from nodeload.plan import NodeState, chain_ids, make_plan


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def _graph(n_layers: int = 3, *, with_index: bool = False, repeat_first: bool = False) -> ImageGraph:
    layers = [Descriptor(MEDIA_OCI_LAYER_GZIP, _digest(f"layer{i}"), 1000 * (i + 1)) for i in range(n_layers)]
    if repeat_first:
        layers.append(layers[0])
    diff_ids = [_digest(f"diff{i}") for i in range(len(layers))]
    config_data = canonical_json({"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": diff_ids}})
    config = Document(descriptor_for(MEDIA_OCI_CONFIG, config_data), config_data)
    manifest_data = canonical_json(
        {"schemaVersion": 2, "config": config.desc.to_json(), "layers": [x.to_json() for x in layers]}
    )
    manifest = Document(descriptor_for(MEDIA_OCI_MANIFEST, manifest_data), manifest_data)
    indexes: tuple[tuple[Document, int], ...] = ()
    if with_index:
        other = {"mediaType": MEDIA_OCI_MANIFEST, "digest": _digest("other"), "size": 1}
        index_data = canonical_json({"manifests": [other, manifest.desc.to_json()]})
        indexes = ((Document(descriptor_for(MEDIA_OCI_INDEX, index_data), index_data), 1),)
    return ImageGraph(indexes, manifest, config, tuple(layers), tuple(diff_ids))


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = _digest("a"), _digest("b"), _digest("c")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == []


def test_cold_plan_sends_everything_children_first() -> None:
    graph = _graph()
    plan = make_plan(graph, NodeState(frozenset()), "overlayfs", rewritable=False)
    order = [b.desc.digest for b in plan.blobs]
    assert order == [*(x.digest for x in graph.layers), graph.config.desc.digest, graph.manifest.desc.digest]
    assert plan.bytes_to_send == graph.total_size
    assert plan.bytes_skipped == 0
    assert plan.root == graph.manifest.desc
    assert [u.chain_id for u in plan.unpack] == chain_ids(graph.diff_ids)
    assert plan.unpack[0].parent == ""
    assert plan.snapshot_label == ("containerd.io/gc.ref.snapshot.overlayfs", chain_ids(graph.diff_ids)[-1])


def test_labels_match_containerd_import() -> None:
    graph = _graph(2)
    plan = make_plan(graph, NodeState(frozenset()), "overlayfs", rewritable=False)
    by_digest = {b.desc.digest: b.labels for b in plan.blobs}
    for layer in graph.layers:
        assert by_digest[layer.digest] == {}  # uncompressed label: only once unpacking verified it
    assert [(u.layer.digest, u.diff_id) for u in plan.unpack] == list(
        zip((x.digest for x in graph.layers), graph.diff_ids, strict=True)
    )
    assert by_digest[graph.manifest.desc.digest] == {
        "containerd.io/gc.ref.content.config": graph.config.desc.digest,
        "containerd.io/gc.ref.content.l.0": graph.layers[0].digest,
        "containerd.io/gc.ref.content.l.1": graph.layers[1].digest,
    }


def test_present_blobs_are_skipped_and_counted() -> None:
    graph = _graph()
    present = frozenset({graph.layers[0].digest, graph.layers[1].digest})
    plan = make_plan(graph, NodeState(present), "overlayfs", rewritable=False)
    assert {b.desc.digest for b in plan.to_send} == {
        graph.layers[2].digest,
        graph.config.desc.digest,
        graph.manifest.desc.digest,
    }
    assert plan.bytes_skipped == graph.layers[0].size + graph.layers[1].size
    assert plan.bytes_to_send + plan.bytes_skipped == graph.total_size


def test_unpack_resumes_above_the_highest_existing_snapshot() -> None:
    graph = _graph(4)
    chains = chain_ids(graph.diff_ids)
    plan = make_plan(
        graph, NodeState(frozenset(), snapshots=frozenset({chains[1]})), "native", rewritable=False
    )
    assert [u.chain_id for u in plan.unpack] == chains[2:]
    assert plan.unpack[0].parent == chains[1]
    everything = make_plan(graph, NodeState(frozenset(), snapshots=frozenset({chains[-1]})), "native", False)
    assert everything.unpack == ()


def test_equivalent_layer_is_swapped_in_when_the_manifest_is_ours() -> None:
    graph = _graph(2)
    twin = Descriptor(MEDIA_DOCKER_LAYER_GZIP, _digest("node-copy"), 777)
    state = NodeState(frozenset({twin.digest}), equivalents={graph.diff_ids[1]: twin})
    plan = make_plan(graph, state, "overlayfs", rewritable=True)
    sent = {b.desc.digest for b in plan.to_send}
    assert graph.layers[1].digest not in sent
    assert twin.digest not in sent
    manifest_step = plan.blobs[-1]
    assert manifest_step.data is not None
    layers = json.loads(manifest_step.data)["layers"]
    assert layers[1]["digest"] == twin.digest
    assert plan.root.digest == manifest_step.desc.digest != graph.manifest.desc.digest
    assert manifest_step.labels["containerd.io/gc.ref.content.l.1"] == twin.digest


def test_equivalents_are_ignored_for_fixed_manifests() -> None:
    graph = _graph(2)
    twin = Descriptor(MEDIA_DOCKER_LAYER_GZIP, _digest("node-copy"), 777)
    state = NodeState(frozenset({twin.digest}), equivalents={graph.diff_ids[1]: twin})
    plan = make_plan(graph, state, "overlayfs", rewritable=False)
    assert graph.layers[1].digest in {b.desc.digest for b in plan.to_send}
    assert plan.root == graph.manifest.desc


def test_index_is_written_last_and_references_the_chosen_manifest() -> None:
    graph = _graph(1, with_index=True)
    plan = make_plan(graph, NodeState(frozenset()), "overlayfs", rewritable=False)
    index_doc = graph.indexes[0][0]
    assert plan.blobs[-1].desc == index_doc.desc
    assert plan.blobs[-1].labels == {"containerd.io/gc.ref.content.m.1": graph.manifest.desc.digest}
    assert plan.root == index_doc.desc


def test_a_layer_used_twice_is_sent_once() -> None:
    graph = _graph(2, repeat_first=True)
    plan = make_plan(graph, NodeState(frozenset()), "overlayfs", rewritable=False)
    digests = [b.desc.digest for b in plan.blobs]
    assert len(digests) == len(set(digests))
    assert len(plan.unpack) == 3  # but it is unpacked at both positions of the stack


def test_labels_a_present_blob_already_carries_are_not_set_again() -> None:
    graph = _graph()
    top = chain_ids(graph.diff_ids)[-1]
    manifest, config = graph.manifest.desc.digest, graph.config.desc.digest
    wanted = make_plan(graph, NodeState(frozenset()), "overlayfs", rewritable=False)
    manifest_labels = {b.desc.digest: b.labels for b in wanted.blobs}[manifest]
    present = frozenset(b.digest for b in graph.blobs)
    held = {manifest: dict(manifest_labels), config: {"containerd.io/gc.ref.snapshot.overlayfs": top}}
    plan = make_plan(graph, NodeState(present, snapshots=frozenset({top}), labels=held), "overlayfs", False)
    assert all(not b.labels for b in plan.blobs)
    assert plan.snapshot_label[1] == ""  # the config keeps the top snapshot already

    stale = {manifest: {**manifest_labels, "containerd.io/gc.ref.content.l.0": _digest("old")}}
    relabel = make_plan(graph, NodeState(present, labels=stale), "overlayfs", rewritable=False)
    assert {b.desc.digest: b.labels for b in relabel.blobs}[manifest] == {
        "containerd.io/gc.ref.content.l.0": graph.layers[0].digest
    }
    assert relabel.snapshot_label[1] == top
