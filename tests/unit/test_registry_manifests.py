"""What ``nodeload serve`` makes of a pushed manifest, from its documents alone: an image a node
can run, or content to keep; the referrers list's descriptors; tag list pages."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from nodeload.image import Descriptor
from nodeload.jsondoc import parse
from nodeload.platforms import Platform
from nodeload.registry.manifests import Documents, not_an_image, referrer, subject_of, tags_page

AMD64 = Platform("linux", "amd64")
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _blob(documents: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    documents[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _manifest(
    documents: dict[str, bytes], config: bytes, config_type: str, layer_type: str = LAYER
) -> dict[str, Any]:
    layer = {"mediaType": layer_type, "digest": "sha256:" + "1" * 64, "size": 10}
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": _blob(documents, config, config_type),
        "layers": [layer],
    }
    return _blob(documents, json.dumps(body).encode(), MANIFEST)


def _config(diff_ids: int, arch: str = "amd64") -> bytes:
    rootfs = {"type": "layers", "diff_ids": ["sha256:" + "2" * 64] * diff_ids}
    return json.dumps({"os": "linux", "architecture": arch, "rootfs": rootfs}).encode()


def _why(documents: dict[str, bytes], root: dict[str, Any]) -> str | None:
    desc = Descriptor(root["mediaType"], root["digest"], root["size"])
    return not_an_image(Documents(desc, documents, None), AMD64)


def test_an_image_config_with_a_diff_id_per_filesystem_layer_is_an_image() -> None:
    documents: dict[str, bytes] = {}
    assert _why(documents, _manifest(documents, _config(1), CONFIG)) is None


@pytest.mark.parametrize(
    ("config", "config_type", "layer_type", "reason"),
    [
        (
            _config(0),
            CONFIG,
            LAYER,
            "lists 1 layers but its config has 0 diff_ids",
        ),  # the conformance suite's
        (b"\x89 not json", "application/vnd.example.config", LAYER, "not an image config"),
        (b"{}", "application/vnd.oci.empty.v1+json", LAYER, "not an image config"),
        (_config(1), CONFIG, "application/vnd.example.payload", "not a filesystem layer"),
    ],
)
def test_anything_else_is_no_image_and_says_why(
    config: bytes, config_type: str, layer_type: str, reason: str
) -> None:
    documents: dict[str, bytes] = {}
    why = _why(documents, _manifest(documents, config, config_type, layer_type))
    assert why is not None and reason in why


def test_an_index_is_an_image_only_for_a_platform_it_offers() -> None:
    documents: dict[str, bytes] = {}
    arm = {
        **_manifest(documents, _config(1, "arm64"), CONFIG),
        "platform": {"os": "linux", "architecture": "arm64"},
    }
    index = _blob(documents, json.dumps({"schemaVersion": 2, "manifests": [arm]}).encode(), INDEX)
    why = _why(documents, index)
    assert why is not None and "no linux/amd64 variant" in why
    amd = {**_manifest(documents, _config(1), CONFIG), "platform": {"os": "linux", "architecture": "amd64"}}
    both = _blob(documents, json.dumps({"schemaVersion": 2, "manifests": [arm, amd]}).encode(), INDEX)
    assert _why(documents, both) is None


def test_a_referrer_is_listed_with_its_artifact_type_and_annotations() -> None:
    subject = {"mediaType": MANIFEST, "digest": "sha256:" + "3" * 64, "size": 5}
    body = {
        "config": {"mediaType": "application/vnd.example.config", "digest": "sha256:" + "4" * 64, "size": 2},
        "subject": subject,
        "annotations": {"a": "b"},
    }
    doc = parse(json.dumps(body).encode(), "m")
    desc = Descriptor(MANIFEST, "sha256:" + "5" * 64, 9)
    assert subject_of(doc) == subject["digest"]
    listed = referrer(desc, doc)
    assert listed["artifactType"] == "application/vnd.example.config"  # no artifactType: the config's
    assert listed["annotations"] == {"a": "b"} and listed["digest"] == desc.digest
    typed = referrer(desc, parse(json.dumps({**body, "artifactType": "application/x"}).encode(), "m"))
    assert typed["artifactType"] == "application/x"


def test_tag_pages_are_sorted_and_follow_last() -> None:
    tags = ["b", "a", "d", "c"]
    assert tags_page(tags, None, None) == (["a", "b", "c", "d"], False)
    assert tags_page(tags, 2, None) == (["a", "b"], True)
    assert tags_page(tags, 2, "b") == (["c", "d"], False)
    assert tags_page(tags, 0, None) == ([], True)
    assert tags_page(tags, None, "d") == ([], False)
