"""What a pushed manifest is, read from its documents alone (no node is asked).

A registry takes any valid manifest or index; a node can run only some of them. An image is a
manifest (or an index with an entry for the node's platform) whose config is an image config
with one diff_id per layer and whose layers are filesystem layers: only that becomes an image
record, unpacked and indexed by CRI. Anything else (an OCI 1.1 artifact, a signature, an SBOM,
an index of them, an image for another platform's index) is kept as content. Also here: the
descriptors the referrers API lists, and tag list pages.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import IO, Any

from nodeload.errors import NodeloadError, SourceError
from nodeload.graph import resolve
from nodeload.image import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_DOCKER_CONFIG,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    Descriptor,
    ImageSource,
)
from nodeload.jsondoc import Doc, parse
from nodeload.platforms import Platform

IMAGE_CONFIG_TYPES = frozenset({MEDIA_OCI_CONFIG, MEDIA_DOCKER_CONFIG})
# Filesystem layers a snapshotter can apply (foreign/nondistributable variants included).
_LAYER_PREFIXES = (
    "application/vnd.oci.image.layer.",
    "application/vnd.docker.image.rootfs.",
)


def not_an_image(source: ImageSource, platform: Platform) -> str | None:
    """Why ``source`` (a pushed manifest and its documents) cannot run on ``platform``; None if it can.

    Blocking (documents are read from ``source``): call it from a thread when they may be remote.
    """
    root = source.root
    if root.media_type and root.media_type not in MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES:
        return f"its media type is {root.media_type}"
    try:
        graph = resolve(source, platform)
    except NodeloadError as err:  # no entry for the platform, a config that is not JSON...
        return _config_type(source) or str(err)
    return _config_type(source, graph.config.desc.media_type) or _layer_types(graph.layers)


def _config_type(source: ImageSource, config_type: str | None = None) -> str | None:
    """Why a manifest's config (``config_type``, else read from the root) is no image config."""
    if config_type is None:
        try:
            with source.open_blob(source.root) as stream:
                config = parse(stream.read(), source.root.digest).opt_obj("config")
            config_type = None if config is None else config.text("mediaType")
        except NodeloadError:
            return None
    if config_type is None or config_type in IMAGE_CONFIG_TYPES:
        return None
    return f"its config is {config_type or 'untyped'}, not an image config"


def _layer_types(layers: Sequence[Descriptor]) -> str | None:
    """Why a manifest's layers are not all filesystem layers."""
    for layer in layers:
        if not layer.media_type.startswith(_LAYER_PREFIXES):
            return f"its layer {layer.digest} is {layer.media_type or 'untyped'}, not a filesystem layer"
    return None


def subject_of(doc: Doc) -> str | None:
    """The digest a manifest refers to (its ``subject``), if it has one.

    Raises:
        SourceError: a malformed subject descriptor.
    """
    subject = doc.opt_obj("subject")
    return None if subject is None else Descriptor.from_json(subject).digest


def referrer(desc: Descriptor, doc: Doc) -> dict[str, Any]:
    """The descriptor of a manifest in a referrers list: its artifact type (the manifest's
    ``artifactType``, else its config's media type) and annotations, as the spec asks."""
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    try:
        config = doc.opt_obj("config")
        kind = doc.text("artifactType") or (config.text("mediaType") if config is not None else "")
        annotations = doc.text_map("annotations")
    except SourceError:
        kind, annotations = "", {}
    if kind:
        out["artifactType"] = kind
    if annotations:
        out["annotations"] = annotations
    return out


def referrers_index(descriptors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The image index the referrers API answers."""
    return {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": list(descriptors)}


def tags_page(tags: Sequence[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """One page of a tag list: lexically sorted, after ``last``, at most ``n``; and whether more follow."""
    ordered = sorted(set(tags))
    if last is not None:
        ordered = [tag for tag in ordered if tag > last]
    if n is None:
        return ordered, False
    return ordered[:n], len(ordered) > n


class Documents:
    """An ImageSource made of the documents of a pushed manifest (its blobs are on the nodes)."""

    def __init__(self, root: Descriptor, documents: dict[str, bytes], name: str | None) -> None:
        self._root, self._documents, self._name = root, documents, name

    @property
    def reference(self) -> str | None:
        return self._name

    @property
    def root(self) -> Descriptor:
        return self._root

    @property
    def rewritable(self) -> bool:
        return False

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        data = self._documents.get(desc.digest)
        if data is None:
            raise SourceError(f"blob {desc.digest} was never uploaded to this node")
        return contextlib.nullcontext(io.BytesIO(data[offset:]))

    def refresh(self, desc: Descriptor) -> bool:
        return False
