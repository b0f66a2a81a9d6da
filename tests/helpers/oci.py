"""Random but reproducible OCI image layouts for tests.

Typical use::

    info = write_layout(tmp_path / "img", ref="v1")                       # one manifest
    info = write_layout(tmp_path / "img", platforms=["linux/amd64", "linux/arm64"])  # an index
    info = write_layout(tmp_path / "img", [ImageSpec((1, 2)), ImageSpec((1, 3), "linux/arm64")])

The same arguments always give the same bytes, so the same digests. Writing
again into an existing layout adds an entry to its index.json (several refs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeload.image import (
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    canonical_json,
    descriptor_for,
)
from nodeload.platforms import Platform

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class Layer:
    """One random layer in both forms."""

    tar: bytes  # uncompressed: what the diffID is computed over
    blob: bytes  # gzip, deterministic (mtime 0)
    diff_id: str
    descriptor: Descriptor  # of the gzip blob


def layer_tar(seed: int, size: int = 64 * 1024, files: int = 3) -> bytes:
    """A deterministic tar of ``files`` random files totalling about ``size`` bytes.

    Different seeds give different paths and contents.
    """
    rng = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            data = rng.randbytes(size // files)
            info = tarfile.TarInfo(f"data/seed{seed}/file{i}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no name, mtime 0)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def random_layer(seed: int, size: int = 64 * 1024, *, media_type: str = MEDIA_OCI_LAYER_GZIP) -> Layer:
    """A random gzip layer from ``seed``."""
    tar = layer_tar(seed, size)
    blob = gzip_bytes(tar)
    return Layer(tar, blob, "sha256:" + hashlib.sha256(tar).hexdigest(), descriptor_for(media_type, blob))


@dataclass(frozen=True)
class ImageSpec:
    """One single-platform image to write: its layers (by seed) and platform."""

    layer_seeds: Sequence[int] = (1,)
    platform: str = "linux/amd64"
    layer_size: int = 64 * 1024


@dataclass(frozen=True)
class WrittenImage:
    """What was written for one platform."""

    manifest: Descriptor  # with its platform, as listed in an index
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    platform: Platform
    config_bytes: bytes


@dataclass(frozen=True)
class LayoutInfo:
    """A written layout and the descriptors in it."""

    path: Path
    root: Descriptor  # the index.json entry: the index, or the only manifest
    images: tuple[WrittenImage, ...]
    index: Descriptor | None = None  # the image index, for multi-platform images
    blobs: Mapping[str, bytes] = field(default_factory=dict)  # every blob written, by digest

    def blob_path(self, digest: str) -> Path:
        """Where a blob is on disk."""
        alg, hexpart = digest.split(":", 1)
        return self.path / "blobs" / alg / hexpart


def write_layout(
    directory: Path,
    images: Sequence[ImageSpec] | None = None,
    *,
    ref: str | None = None,
    name: str | None = None,
    platforms: Sequence[str] | None = None,
    seed: int = 1,
    index: bool | None = None,
    docker_media_types: bool = False,
) -> LayoutInfo:
    """Write (or add to) an OCI image layout at ``directory``.

    Args:
        directory: created if missing; an existing layout gets one more index.json entry.
        images: the images; several make a multi-platform index.
        ref: the entry's ``org.opencontainers.image.ref.name`` (e.g. ``v1``).
        name: the entry's ``io.containerd.image.name`` (e.g. ``docker.io/library/app:v1``).
        platforms: shorthand for ``images``: one two-layer image per platform,
            layer seeds derived from ``seed``.
        seed: base seed for ``platforms`` or the default single image.
        index: force (True) or forbid (False) an index; default: only for several images.
        docker_media_types: Docker schema2 media types instead of OCI ones.

    Returns:
        The descriptors written, the root entry first.
    """
    if images is None:
        plats = platforms or ["linux/amd64"]
        images = [ImageSpec((seed * 1000 + 10 * i, seed * 1000 + 10 * i + 1), p) for i, p in enumerate(plats)]
    media = _DOCKER if docker_media_types else _OCI
    blobs: dict[str, bytes] = {}
    written = tuple(_write_image(spec, media, blobs) for spec in images)
    index_desc = None
    if index or (index is None and len(written) > 1):
        doc = {
            "schemaVersion": 2,
            "mediaType": media["index"],
            "manifests": [w.manifest.to_json() for w in written],
        }
        index_desc = _put(blobs, media["index"], canonical_json(doc))
        root = index_desc
    else:
        root = Descriptor(
            written[0].manifest.media_type, written[0].manifest.digest, written[0].manifest.size
        )
    annotations = {k: v for k, v in ((REF_NAME, ref), (CONTAINERD_NAME, name)) if v}
    root = Descriptor(root.media_type, root.digest, root.size, annotations)
    _write_files(directory, blobs, root)
    return LayoutInfo(directory, root, written, index_desc, blobs)


_OCI = {
    "index": MEDIA_OCI_INDEX,
    "manifest": MEDIA_OCI_MANIFEST,
    "config": MEDIA_OCI_CONFIG,
    "layer": MEDIA_OCI_LAYER_GZIP,
}
_DOCKER = {
    "index": MEDIA_DOCKER_LIST,
    "manifest": MEDIA_DOCKER_MANIFEST,
    "config": MEDIA_DOCKER_CONFIG,
    "layer": MEDIA_DOCKER_LAYER_GZIP,
}


def image_config(diff_ids: Sequence[str], platform: Platform) -> bytes:
    """A minimal, deterministic image config."""
    doc: dict[str, Any] = {
        **platform.to_json(),
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    return canonical_json(doc)


def _put(blobs: dict[str, bytes], media_type: str, data: bytes) -> Descriptor:
    desc = descriptor_for(media_type, data)
    blobs[desc.digest] = data
    return desc


def _write_image(spec: ImageSpec, media: Mapping[str, str], blobs: dict[str, bytes]) -> WrittenImage:
    platform = Platform.parse(spec.platform)
    layers = [random_layer(s, spec.layer_size, media_type=media["layer"]) for s in spec.layer_seeds]
    for layer in layers:
        blobs[layer.descriptor.digest] = layer.blob
    config_bytes = image_config([la.diff_id for la in layers], platform)
    config = _put(blobs, media["config"], config_bytes)
    doc = {
        "schemaVersion": 2,
        "mediaType": media["manifest"],
        "config": config.to_json(),
        "layers": [la.descriptor.to_json() for la in layers],
    }
    manifest = _put(blobs, media["manifest"], canonical_json(doc))
    manifest = Descriptor(manifest.media_type, manifest.digest, manifest.size, platform=platform)
    return WrittenImage(
        manifest,
        config,
        tuple(la.descriptor for la in layers),
        tuple(la.diff_id for la in layers),
        platform,
        config_bytes,
    )


def _write_files(directory: Path, blobs: Mapping[str, bytes], entry: Descriptor) -> None:
    (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    for digest, data in blobs.items():
        (directory / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = directory / "index.json"
    index = (
        json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"].append(entry.to_json())
    index_path.write_text(json.dumps(index, indent=1))


def tar_directory(directory: Path, archive: Path, compression: str | None = None) -> Path:
    """Tar ``directory``'s contents (as an oci-archive), optionally gzip or zstd compressed."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    if compression == "gzip":
        archive.write_bytes(gzip.compress(archive.read_bytes()))
    elif compression == "zstd":
        if shutil.which("zstd") is None:
            raise RuntimeError("the zstd program is needed for zstd archives")
        subprocess.run(["zstd", "-q", "-f", "--rm", str(archive), "-o", f"{archive}.zst"], check=True)
        Path(f"{archive}.zst").rename(archive)
    elif compression is not None:
        raise ValueError(f"unknown compression {compression!r}")
    return archive
