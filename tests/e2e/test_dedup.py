"""What a node already holds is not sent again: other platforms, and layers that
arrived another way (``docker save | ctr import``, or compressed by another tool)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.conftest import APP
from tests.e2e.pushing import content_sizes, image_names, push_json, run_image
from tests.helpers.oci import ImageSpec, write_layout

pytestmark = pytest.mark.e2e


def test_multi_platform_index_sends_only_the_node_platform(node_sandbox: Sandbox, tmp_path: Path) -> None:
    info = write_layout(
        tmp_path / "multi",
        [ImageSpec((11, 12), "linux/amd64", 256 * 1024), ImageSpec((21, 22), "linux/arm64", 256 * 1024)],
        ref="v1",
        name="docker.io/nodeload-e2e/multi:v1",
    )
    amd64, arm64 = info.images
    assert info.index is not None
    [result] = push_json(node_sandbox, f"oci:{info.path}:v1")
    on_node = content_sizes(node_sandbox.node("node-1"))
    expected = {
        info.index.digest,
        amd64.manifest.digest,
        amd64.config.digest,
        *(x.digest for x in amd64.layers),
    }
    assert set(on_node) == expected
    assert result["bytes_sent"] == sum(on_node.values())
    assert not {x.digest for x in arm64.layers} & set(on_node)
    assert result["platform"] == "linux/amd64"
    assert result["digest"] == info.index.digest
    assert "docker.io/nodeload-e2e/multi:v1" in image_names(node_sandbox.node("node-1"))


def test_layers_imported_by_ctr_are_not_sent_again(node_sandbox: Sandbox, app_images: dict[str, str]) -> None:
    node = node_sandbox.node("node-1")
    node.ctr_import(app_images["v1"])  # the old way: uncompressed layers stored under their diffIDs
    before = content_sizes(node)
    [same] = push_json(node_sandbox, app_images["v1"])  # the very image, under its name: nothing to do
    assert (same["export"], same["blobs_sent"], content_sizes(node)) == ("none", 0, before)
    [result] = push_json(node_sandbox, app_images["v1"], extra=("--name", f"example.com/{APP}:v1"))
    new = {d: s for d, s in content_sizes(node).items() if d not in before}
    # Config (same digest: Docker's image id) and every layer were there; only a manifest travels.
    assert result["blobs_sent"] == 1
    assert result["bytes_sent"] == sum(new.values()) < 4096
    assert run_image(node, f"example.com/{APP}:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"


def test_layers_compressed_by_another_tool_are_not_sent_again(
    node_sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    node = node_sandbox.node("node-1")
    layout = tmp_path / "skopeo"
    # skopeo compresses the layers itself: same content, other digests than nodeload's.
    subprocess.run(
        ["skopeo", "copy", "--dest-compress", f"docker-daemon:{app_images['v1']}", f"oci:{layout}:v1"],
        check=True,
        capture_output=True,
    )
    [first] = push_json(node_sandbox, f"oci:{layout}:v1", extra=("--name", "nodeload-e2e/from-skopeo:v1"))
    before = content_sizes(node)
    [result] = push_json(node_sandbox, app_images["v1"])
    new = {d: s for d, s in content_sizes(node).items() if d not in before}
    # skopeo's OCI conversion rewrote the config, so config + manifest travel; no layer does.
    assert result["blobs_sent"] == 2
    assert result["bytes_sent"] == sum(new.values()) < 16384
    assert first["bytes_sent"] > 10 * 1024 * 1024
    assert run_image(node, f"docker.io/{APP}:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"
