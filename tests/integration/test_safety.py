"""The safety claims, proven through real pushes (not only on the client's building blocks):
a synchronous garbage collection on the node during and after a push takes nothing the image
needs (whether the lease holds each blob, or the replaced image's manifest that refers to them,
or something went between looking and pinning); a rebuilt image moves its tag; a stale partial
upload is restarted; a layer whose content disagrees with the config fails the push without
leaving an image behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import platform
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nodeload import PushOptions, push
from nodeload.containerd.client import ContainerdClient
from nodeload.image import MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, canonical_json, descriptor_for
from nodeload.sandbox.faults import FaultAt
from nodeload.stores.containerd import _Writer as Writer  # what asks the node, for a fault between
from nodeload.transports.ssh_connect import SSHOptions
from tests.helpers.oci import ImageSpec, LayoutInfo, write_layout
from tests.integration.cli import Cli, chain_ids, content, images, snapshots
from tests.integration.nodes import Containerd, Sshd

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(platform.machine() not in ("x86_64", "amd64"), reason="expects an amd64 host"),
]


def _options(sshd: Sshd, node: Containerd, **kw: object) -> PushOptions:
    ssh = SSHOptions(identity=sshd.client_key, known_hosts=sshd.known_hosts)
    return PushOptions.of(socket=str(node.socket), ssh=ssh, **kw)


@pytest.mark.parametrize("phase", ["write", "unpack"])
def test_a_sync_gc_during_and_after_a_push_takes_nothing_it_needs(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, phase: str
) -> None:
    node = fresh_containerd
    # Namespace "default": in k8s.io, CRI's own record of the old image would keep it alive anyway.
    old = write_layout(tmp_path / "old", [ImageSpec((101, 102))], ref="v1")
    new = write_layout(tmp_path / "new", [ImageSpec((101, 103))], ref="v1")  # shares the first layer
    options = _options(sshd, node, namespace="default")
    (first,) = push(f"oci:{old.path}:v1", [sshd.node], _replace(options, "x.io/old:v1"))
    assert first.ok, first.error

    # kubelet's image GC, say: the old image goes, and a synchronous GC runs, in the middle of the push.
    collect = FaultAt(
        phase, lambda: node.ctr("images", "rm", "--sync", "x.io/old:v1", namespace="default"), after_bytes=1
    )
    (result,) = push(f"oci:{new.path}:v1", [sshd.node], _replace(options, "x.io/new:v1"), progress=collect)
    assert collect.fired and result.ok, result.error
    assert result.bytes_skipped > 0  # the shared layer was found, not sent: only the lease kept it

    wanted = {new.root.digest, new.images[0].config.digest, *(d.digest for d in new.images[0].layers)}
    chains = set(chain_ids(new.images[0].diff_ids))
    assert wanted <= content(node, "default") and chains <= snapshots(node, "default")
    node.ctr("images", "rm", "--sync", "x.io/unrelated:v0", namespace="default")  # and once more after
    assert wanted <= content(node, "default") and chains <= snapshots(node, "default")
    assert old.images[0].layers[1].digest not in content(node, "default")  # what only old had is gone


@pytest.mark.parametrize("phase", ["write", "unpack"])
def test_the_replaced_image_pinned_in_its_place_keeps_the_shared_layers(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, phase: str
) -> None:
    """A changed push under the same name pins the image it replaces (one reference that keeps
    its layers and snapshots); deleting that image mid-push takes nothing the new one needs."""
    node = fresh_containerd
    old = write_layout(tmp_path / "old", [ImageSpec((141, 142, 143))], ref="v1")
    new = write_layout(tmp_path / "new", [ImageSpec((141, 142, 144))], ref="v1")
    options = _replace(_options(sshd, node, namespace="default"), "x.io/app:dev")
    (first,) = push(f"oci:{old.path}:v1", [sshd.node], options)
    assert first.ok, first.error

    collect = FaultAt(
        phase, lambda: node.ctr("images", "rm", "--sync", "x.io/app:dev", namespace="default"), after_bytes=1
    )
    (result,) = push(f"oci:{new.path}:v1", [sshd.node], options, progress=collect)
    assert collect.fired and result.ok, result.error
    shared = sum(d.size for d in new.images[0].layers[:2])
    assert result.bytes_skipped >= shared and result.layers_unpacked == 1  # found, not sent or unpacked

    wanted = {new.root.digest, new.images[0].config.digest, *(d.digest for d in new.images[0].layers)}
    chains = set(chain_ids(new.images[0].diff_ids))
    assert wanted <= content(node, "default") and chains <= snapshots(node, "default")
    node.collect_garbage("default")  # the push's lease is gone: what only the old image had goes now
    assert wanted <= content(node, "default") and chains <= snapshots(node, "default")
    assert old.images[0].layers[2].digest not in content(node, "default")


def test_what_goes_between_looking_and_pinning_is_sent(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node is asked first and pinned after: a layer collected in between is noticed when
    the node is asked again, everything is pinned one by one, and the layer is sent."""
    node = fresh_containerd
    old = write_layout(tmp_path / "old", [ImageSpec((151, 152))], ref="v1")
    new = write_layout(tmp_path / "new", [ImageSpec((151, 153))], ref="v1")
    options = _options(sshd, node, namespace="default")
    (first,) = push(f"oci:{old.path}:v1", [sshd.node], _replace(options, "x.io/old:v1"))
    assert first.ok, first.error

    look = Writer._look
    looks: list[frozenset[str]] = []

    async def look_then_collect(self: Writer, *args: object, **kw: object) -> object:
        seen = await look(self, *args, **kw)  # type: ignore[arg-type]
        looks.append(seen.state.present)
        if len(looks) == 1:  # kubelet's image GC, right after the node said what it holds
            await asyncio.to_thread(node.ctr, "images", "rm", "--sync", "x.io/old:v1", namespace="default")
        return seen

    monkeypatch.setattr(Writer, "_look", look_then_collect)
    (result,) = push(f"oci:{new.path}:v1", [sshd.node], _replace(options, "x.io/new:v1"))
    assert result.ok, result.error
    shared = new.images[0].layers[0]
    assert shared.digest in looks[0] and shared.digest not in looks[1]  # looked again, and it was gone
    assert result.bytes_sent >= shared.size and result.blobs_sent == len(new.blobs)
    wanted = {new.root.digest, new.images[0].config.digest, *(d.digest for d in new.images[0].layers)}
    assert wanted <= content(node, "default")
    assert set(chain_ids(new.images[0].diff_ids)) <= snapshots(node, "default")


def test_a_rebuilt_image_moves_its_tag_and_the_old_one_becomes_collectable(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    v1 = write_layout(tmp_path / "v1", [ImageSpec((111, 112))], ref="v1")
    v2 = write_layout(tmp_path / "v2", [ImageSpec((111, 113))], ref="v1")
    cli.push_ok(f"oci:{v1.path}:v1", node, "--name", "x.io/app:dev")
    rebuilt = cli.push_ok(f"oci:{v2.path}:v1", node, "--name", "x.io/app:dev")

    assert rebuilt["cri_indexed"] is True  # CRI answers the tag with the new config
    listed = node.ctr("images", "ls").splitlines()
    assert any(line.split()[0] == "x.io/app:dev" and v2.root.digest in line for line in listed)
    # CRI keeps a record of the old image under its ID until kubelet's GC removes it: then the
    # layer only v1 had goes, and everything v2 needs stays.
    node.ctr("images", "rm", "--sync", v1.images[0].config.digest)
    left = content(node)
    assert v1.images[0].layers[1].digest not in left
    assert {d.digest for d in v2.images[0].layers} <= left


def test_a_stale_partial_upload_is_restarted(cli: Cli, fresh_containerd: Containerd, tmp_path: Path) -> None:
    node = fresh_containerd
    info = write_layout(tmp_path / "img", [ImageSpec((121,), layer_size=512 * 1024)], ref="v1")
    layer = info.images[0].layers[0]

    async def garbage() -> None:  # what a broken earlier writer left under nodeload's ref for that blob
        async def chunks() -> AsyncIterator[bytes]:
            yield b"\0" * 4096

        client = ContainerdClient(f"unix:{node.socket}")
        stream = await client.open_ingest(f"nodeload-{layer.digest}")
        await stream.append(chunks())
        stream.close()
        await client.close()

    asyncio.run(garbage())
    result = cli.push_ok(f"oci:{info.path}:v1", node, "--name", "x.io/stale:v1")
    assert result["bytes_sent"] >= sum(len(data) for data in info.blobs.values())  # the layer went whole
    assert layer.digest in content(node)


def test_a_layer_that_disagrees_with_its_config_fails_without_an_image(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    info = _with_wrong_diff_id(write_layout(tmp_path / "img", [ImageSpec((131, 132))], ref="v1"))
    run = cli.push(f"oci:{info}:v1", node, "--name", "x.io/liar:v1")
    assert run.code == 1
    (result,) = run.nodes
    assert "x.io/liar:v1" not in images(node)
    assert "Traceback" not in run.err and result["error"]
    assert [lease for lease in node.ctr("leases", "ls", "-q").split() if lease.startswith("nodeload-")] == []


def _with_wrong_diff_id(info: LayoutInfo) -> Path:
    """The layout, with its config claiming another uncompressed digest for the last layer."""
    written = info.images[0]
    config = json.loads(written.config_bytes)
    config["rootfs"]["diff_ids"][-1] = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()
    config_bytes = canonical_json(config)
    manifest = json.loads(info.blobs[written.manifest.digest])
    manifest["config"] = descriptor_for(MEDIA_OCI_CONFIG, config_bytes).to_json()
    manifest_bytes = canonical_json(manifest)
    blobs = info.path / "blobs" / "sha256"
    for data in (config_bytes, manifest_bytes):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    entry = descriptor_for(MEDIA_OCI_MANIFEST, manifest_bytes).to_json()
    entry["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (info.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return info.path


def _replace(options: PushOptions, name: str) -> PushOptions:
    return dataclasses.replace(options, store=dataclasses.replace(options.store, name=name))
