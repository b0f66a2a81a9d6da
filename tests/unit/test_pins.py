"""The fewest lease references that keep what a plan relies on (nodeload.pins)."""

import hashlib

from nodeload.pins import Pins, choose_pins, references
from nodeload.plan import chain_ids

SNAPSHOT = "containerd.io/gc.ref.snapshot.overlayfs"


def _d(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


LAYERS = [_d(f"layer{i}") for i in range(3)]
CHAINS = chain_ids([_d(f"diff{i}") for i in range(3)])
CONFIG, MANIFEST = _d("config"), _d("manifest")
MANIFEST_LABELS = {
    "containerd.io/gc.ref.content.config": CONFIG,
    **{f"containerd.io/gc.ref.content.l.{i}": layer for i, layer in enumerate(LAYERS)},
}


def test_references_follow_containerds_label_rules() -> None:
    labels = {
        "containerd.io/gc.ref.content.l.0": "a",
        "containerd.io/gc.ref.content/x": "b",
        "containerd.io/gc.ref.content": "c",
        "containerd.io/gc.ref.contentious": "not a reference",
        SNAPSHOT: "s1",
        f"{SNAPSHOT}/named": "s2",
        "containerd.io/gc.ref.snapshot.overlayfs2": "another snapshotter",
        "containerd.io/uncompressed": "not a reference",
    }
    assert references(labels, "overlayfs") == ({"a", "b", "c"}, {"s1", "s2"})


def test_a_labelled_manifest_keeps_everything_with_one_pin() -> None:
    labels = {MANIFEST: MANIFEST_LABELS, CONFIG: {SNAPSHOT: CHAINS[-1]}, **{x: {} for x in LAYERS}}
    needed = [*LAYERS, CONFIG, MANIFEST]
    pins = choose_pins(needed, labels, "overlayfs", CHAINS[-1])
    assert pins == Pins((MANIFEST,), None, frozenset(needed))


def test_without_labels_every_blob_and_the_top_snapshot_are_pinned() -> None:
    labels: dict[str, dict[str, str]] = {x: {} for x in [*LAYERS, CONFIG]}
    pins = choose_pins([*LAYERS, CONFIG], labels, "overlayfs", CHAINS[1])
    assert sorted(pins.digests) == sorted([*LAYERS, CONFIG])
    assert pins.snapshot == CHAINS[1]


def test_the_replaced_image_keeps_the_shared_layers() -> None:
    """A warm push: the new top layer and config were just written; the old image's manifest
    refers to the shared layers. Its config's snapshot is not one of this image's chains: the
    shared top chain is pinned itself."""
    old_config, old_manifest, new_layer = _d("old config"), _d("old manifest"), _d("new layer")
    labels = {
        old_manifest: {**MANIFEST_LABELS, "containerd.io/gc.ref.content.config": old_config},
        old_config: {SNAPSHOT: CHAINS[-1]},
        **{x: {} for x in [*LAYERS[:2], new_layer, CONFIG]},
    }
    needed = [*LAYERS[:2], new_layer, CONFIG]
    pins = choose_pins(needed, labels, "overlayfs", CHAINS[1], roots=[old_manifest])
    assert pins.digests[0] == old_manifest
    assert sorted(pins.digests[1:]) == sorted([new_layer, CONFIG])
    assert pins.snapshot == CHAINS[1]
    assert {old_manifest, old_config, *LAYERS[:2]} <= pins.labelled


def test_a_snapshot_outside_the_images_chain_keeps_nothing() -> None:
    labels = {CONFIG: {SNAPSHOT: _d("elsewhere")}}
    pins = choose_pins([CONFIG], labels, "overlayfs", CHAINS[0])
    assert pins == Pins((CONFIG,), CHAINS[0], frozenset({CONFIG}))


def test_a_label_naming_a_chain_above_the_committed_one_keeps_nothing() -> None:
    """The top committed chain is the highest there is: a label naming a higher one (its
    snapshot removed meanwhile) refers to nothing, so the top is pinned itself."""
    labels = {CONFIG: {SNAPSHOT: CHAINS[-1]}}
    pins = choose_pins([CONFIG], labels, "overlayfs", CHAINS[0])
    assert pins == Pins((CONFIG,), CHAINS[0], frozenset({CONFIG}))


def test_what_the_lease_holds_already_is_not_pinned_again() -> None:
    labels: dict[str, dict[str, str]] = {x: {} for x in [*LAYERS, CONFIG]}
    pins = choose_pins(
        [*LAYERS, CONFIG], labels, "overlayfs", CHAINS[-1], pinned=frozenset(LAYERS), top_pinned=True
    )
    assert pins == Pins((CONFIG,), None, frozenset({CONFIG}))


def test_a_twin_named_like_a_chain_is_still_pinned() -> None:
    """The first chain ID is the first layer's uncompressed digest, which is also the digest of
    that layer's uncompressed twin: a pinned chain is no pinned blob."""
    twin = CHAINS[0]
    pins = choose_pins([twin], {twin: {}}, "overlayfs", CHAINS[0], top_pinned=True)
    assert pins == Pins((twin,), None, frozenset({twin}))


def test_nothing_needed_pins_nothing() -> None:
    assert choose_pins([], {}, "overlayfs") == Pins(())
