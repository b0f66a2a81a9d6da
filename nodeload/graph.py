"""Resolve an image into the blobs one platform needs: index -> manifest -> config + layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nodeload.errors import PlatformNotFound, SourceError
from nodeload.image import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    Descriptor,
    ImageSource,
    check_digest,
    read_document,
)
from nodeload.jsondoc import Doc, parse
from nodeload.platforms import Platform, choose_platform


@dataclass(frozen=True)
class Document:
    """A small JSON blob held in memory together with its descriptor."""

    desc: Descriptor
    data: bytes

    def json(self) -> Doc:
        """The parsed document (bounded, with typed accessors)."""
        return parse(self.data, self.desc.digest)


@dataclass(frozen=True)
class ImageGraph:
    """Everything one platform of an image consists of."""

    indexes: tuple[tuple[Document, int], ...]  # each index on the path and the chosen entry
    manifest: Document
    config: Document
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]

    @property
    def root(self) -> Descriptor:
        """What the image record on the node points at."""
        return self.indexes[0][0].desc if self.indexes else self.manifest.desc

    @property
    def platform(self) -> Platform:
        """The platform the config declares."""
        return Platform.from_json(self.config.json())

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob of this platform: layers, config, manifest, indexes."""
        return (*self.layers, self.config.desc, self.manifest.desc, *(doc.desc for doc, _ in self.indexes))

    @property
    def total_size(self) -> int:
        """Bytes of all blobs of this platform."""
        return sum(blob.size for blob in self.blobs)


def resolve(source: ImageSource, platform: Platform) -> ImageGraph:
    """Walk the image from its root down to the layers of ``platform``.

    Raises:
        PlatformNotFound: when an index has no entry for ``platform``.
        SourceError: when a document is malformed.
    """
    indexes: list[tuple[Document, int]] = []
    desc = source.root
    for _ in range(4):  # nested indexes exist but are shallow; bound the walk
        doc = Document(desc, read_document(source, desc))
        body = doc.json()
        kind = desc.media_type or body.text("mediaType")
        if kind in MANIFEST_MEDIA_TYPES or "layers" in body:
            return _resolve_manifest(source, indexes, doc)
        if kind not in INDEX_MEDIA_TYPES and "manifests" not in body:
            raise SourceError(f"{desc.digest} has unsupported media type {kind!r}")
        entries = [Descriptor.from_json(m) for m in body.objs("manifests")]
        platforms = [e.platform or Platform("", "") for e in entries]
        chosen = choose_platform(platform, platforms)
        if chosen is None:
            offered = ", ".join(str(p) for p in platforms if p.os) or "none declared"
            raise PlatformNotFound(f"the image has no {platform} variant (it offers: {offered})")
        indexes.append((doc, chosen))
        desc = entries[chosen]
    raise SourceError(f"{source.root.digest}: indexes nested too deeply")


def next_document(
    data: bytes, digest: str, platform: Platform
) -> tuple[Literal["manifest", "config"], str] | None:
    """One step from a document towards ``platform``'s config: an index's entry for it, or a
    manifest's config; None when the document has neither.

    Raises:
        SourceError: when the document is malformed.
    """
    body = parse(data, digest)
    if "config" in body:
        return "config", Descriptor.from_json(body.obj("config")).digest
    if "manifests" not in body:
        return None
    entries = [Descriptor.from_json(m) for m in body.objs("manifests")]
    chosen = choose_platform(platform, [e.platform or Platform("", "") for e in entries])
    return None if chosen is None else ("manifest", entries[chosen].digest)


def _resolve_manifest(
    source: ImageSource, indexes: list[tuple[Document, int]], manifest: Document
) -> ImageGraph:
    doc = manifest.json()
    config_desc = Descriptor.from_json(doc.obj("config"))
    layers = tuple(Descriptor.from_json(layer) for layer in doc.objs("layers"))
    config = Document(config_desc, read_document(source, config_desc))
    rootfs = config.json().opt_obj("rootfs")
    diff_ids = (
        tuple(check_digest(d, f"{config_desc.digest}: rootfs") for d in rootfs.texts("diff_ids"))
        if rootfs
        else ()
    )
    if len(diff_ids) != len(layers):
        raise SourceError(
            f"manifest {manifest.desc.digest} lists {len(layers)} layers "
            f"but its config has {len(diff_ids)} diff_ids"
        )
    return ImageGraph(tuple(indexes), manifest, config, layers, diff_ids)
