"""Hand-made ``docker save`` tarballs in both layouts, for tests without a Docker engine.

``legacy``: ``<v1 id>/layer.tar`` + ``<image id hex>.json`` (Docker < 25; a
repeated layer is a symlink). ``oci``: Docker 25+'s OCI layout,
``manifest.json`` pointing at ``blobs/sha256/<hex>`` (uncompressed layers
named by diffID, or gzip layers named by their digest as the containerd
store writes them).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodeload.image import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    canonical_json,
    descriptor_for,
)
from nodeload.platforms import Platform
from tests.helpers.oci import Layer, image_config, random_layer

MEDIA_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class SavedImage:
    """One image of a docker save tarball."""

    tags: tuple[str, ...]
    layers: tuple[Layer, ...]
    config: bytes

    @property
    def image_id(self) -> str:
        """Docker's image ID: the config digest."""
        return "sha256:" + hashlib.sha256(self.config).hexdigest()

    @property
    def diff_ids(self) -> list[str]:
        """The layers' uncompressed digests."""
        return [layer.diff_id for layer in self.layers]


def saved_image(
    tags: Sequence[str], seeds: Sequence[int], size: int | Sequence[int] = 64 * 1024
) -> SavedImage:
    """An image with random layers from ``seeds`` (repeat a seed to repeat a layer).

    ``size`` is every layer's payload size, or one size per layer.
    """
    sizes = [size] * len(seeds) if isinstance(size, int) else list(size)
    layers = tuple(random_layer(s, n) for s, n in zip(seeds, sizes, strict=True))
    config = image_config([la.diff_id for la in layers], Platform("linux", "amd64"))
    return SavedImage(tuple(tags), layers, config)


class _TarWriter:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar, self.written = tar, set[str]()

    def file(self, name: str, data: bytes) -> None:
        if name in self.written:
            return
        self.written.add(name)
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 0
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.tar.addfile(info)


def docker_archive_bytes(
    images: Iterable[SavedImage], *, layout: str = "legacy", gzip_layers: bool = False
) -> bytes:
    """A docker save tarball of ``images`` in the ``legacy`` or ``oci`` layout."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        out = _TarWriter(tar)
        entries = [_write_image(out, image, layout, gzip_layers) for image in images]
        out.file("manifest.json", json.dumps(entries).encode())
        if layout == "oci":
            out.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return buffer.getvalue()


def write_docker_archive(
    path: Path, images: Iterable[SavedImage], *, layout: str = "legacy", gzip_layers: bool = False
) -> Path:
    """Write :func:`docker_archive_bytes` to ``path``."""
    path.write_bytes(docker_archive_bytes(images, layout=layout, gzip_layers=gzip_layers))
    return path


def _write_image(out: _TarWriter, image: SavedImage, layout: str, gzip_layers: bool) -> dict[str, object]:
    if layout == "legacy":
        return _write_legacy(out, image, gzip_layers)
    if layout != "oci":
        raise ValueError(f"unknown layout {layout!r}")
    names = []
    for layer in image.layers:
        data = layer.blob if gzip_layers else layer.tar
        names.append(_blob(out, data))
    config = _blob(out, image.config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": descriptor_for(MEDIA_OCI_CONFIG, image.config).to_json(),
            "layers": [
                (
                    layer.descriptor if gzip_layers else descriptor_for(MEDIA_OCI_LAYER_TAR, layer.tar)
                ).to_json()
                for layer in image.layers
            ],
        }
    )
    _blob(out, manifest)
    entry = descriptor_for(MEDIA_OCI_MANIFEST, manifest).to_json()
    if image.tags:
        entry["annotations"] = {
            "io.containerd.image.name": image.tags[0],
            "org.opencontainers.image.ref.name": "latest",
        }
    out.file(
        "index.json",
        json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [entry]}).encode(),
    )
    return {"Config": config, "RepoTags": list(image.tags), "Layers": names}


def _blob(out: _TarWriter, data: bytes) -> str:
    name = "blobs/sha256/" + hashlib.sha256(data).hexdigest()
    out.file(name, data)
    return name


def _write_legacy(out: _TarWriter, image: SavedImage, gzip_layers: bool) -> dict[str, object]:
    names: list[str] = []
    first_dir: dict[str, str] = {}
    for i, layer in enumerate(image.layers):
        v1 = hashlib.sha256(f"{image.image_id} {i}".encode()).hexdigest()
        name = f"{v1}/layer.tar"
        out.file(f"{v1}/VERSION", b"1.0")
        out.file(f"{v1}/json", json.dumps({"id": v1}).encode())
        if layer.diff_id in first_dir:  # as docker save does for a repeated layer
            out.symlink(name, f"../{first_dir[layer.diff_id]}/layer.tar")
        else:
            first_dir[layer.diff_id] = v1
            out.file(name, layer.blob if gzip_layers else layer.tar)
        names.append(name)
    config = f"{image.image_id.removeprefix('sha256:')}.json"
    out.file(config, image.config)
    return {"Config": config, "RepoTags": list(image.tags), "Layers": names}
