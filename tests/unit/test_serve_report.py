"""What ``nodeload serve`` reports per node: images by record name, and manifests kept that are
no image ("stored, not an image"), in the table and in ``--json``."""

from __future__ import annotations

from typing import Any, cast

from rich.console import Console

from nodeload.registry.server import ServeOutcome
from nodeload.registry.store import ServedNode, StoredManifest
from nodeload.report import NodeResult, Status
from nodeload.summary import print_serve_summary


def _outcome() -> ServeOutcome:
    image = NodeResult(
        node="node-1", image="docker.io/apps/web:v1", status=Status.OK, name="docker.io/apps/web:v1"
    )
    artifact = StoredManifest(
        "sha256:" + "a" * 64,
        "application/vnd.oci.image.manifest.v1+json",
        "docker.io/apps/rocket:v1",
        "its config is application/vnd.example.config, not an image config",
    )
    node = ServedNode("node-1", cast(Any, None), cast(Any, None), results=[image], stored=[artifact])
    return ServeOutcome("127.0.0.1:5000", 0, [node], {})


def test_the_json_lists_images_and_stored_manifests_per_node() -> None:
    (node,) = _outcome().to_json()["nodes"]
    assert node["status"] == "ok"
    assert [r["name"] for r in node["images"]] == ["docker.io/apps/web:v1"]
    assert node["stored"] == [
        {
            "digest": "sha256:" + "a" * 64,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "name": "docker.io/apps/rocket:v1",
            "not_an_image": "its config is application/vnd.example.config, not an image config",
        }
    ]


def test_the_table_names_what_is_stored_not_as_an_image() -> None:
    console = Console(record=True, width=200)
    print_serve_summary(console, _outcome())
    text = console.export_text()
    assert "docker.io/apps/web:v1, docker.io/apps/rocket:v1 (stored, not an image)" in text
    assert "FAILED" not in text
