"""The image model every source produces and every store consumes.

A source hands out an :class:`ImageSource`: a root descriptor (an index or a
manifest) plus a way to read any blob of that image as a stream. Small JSON
documents (index, manifest, config) are read whole; layers are only ever
streamed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from nodeload.errors import SourceError
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, Doc
from nodeload.platforms import Platform

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

INDEX_MEDIA_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
MANIFEST_MEDIA_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# The digests nodeload handles, as containerd and the distribution spec write them.
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")


def check_digest(digest: str, where: str) -> str:
    """``digest`` if it is a well-formed sha256/sha512 digest, else SourceError naming ``where``."""
    if not _DIGEST.match(digest):
        shown = digest if len(digest) < 80 else digest[:77] + "..."
        raise SourceError(f"{where}: invalid digest {shown!r}")
    return digest


@dataclass(frozen=True)
class Descriptor:
    """A content-addressed pointer to a blob (OCI descriptor)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None

    @classmethod
    def from_json(cls, doc: Doc) -> Descriptor:
        """Build a descriptor from its JSON form inside an index or manifest.

        Raises:
            SourceError: when a field is missing, of the wrong type or out of range.
        """
        platform = doc.opt_obj("platform")
        return cls(
            media_type=doc.text("mediaType"),
            digest=check_digest(doc.text("digest", None), doc.where),
            size=doc.size("size"),
            annotations=doc.text_map("annotations"),
            platform=Platform.from_json(platform) if platform else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor's JSON form, as written into a manifest."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor_for(media_type: str, data: bytes) -> Descriptor:
    """A descriptor for an in-memory document."""
    return Descriptor(media_type=media_type, digest=sha256_digest(data), size=len(data))


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Stable JSON bytes, so the same document always has the same digest."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class ImageSource(Protocol):
    """What every source (daemon, layout, archive, ...) provides.

    ``reference`` is the source's own name for the image, if it has one
    (used as the default name on the node). ``root`` is the top descriptor:
    an index or a single-platform manifest.
    """

    @property
    def reference(self) -> str | None: ...

    @property
    def root(self) -> Descriptor: ...

    @property
    def rewritable(self) -> bool:
        """True when the manifest is synthesized by us, so a layer may be swapped
        for an equivalent blob (same uncompressed digest) the node already has."""
        ...

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Open a blob for streaming, positioned at ``offset``."""
        ...

    def refresh(self, desc: Descriptor) -> bool:
        """A node found that the blob's bytes do not match its digest: derive them again.

        Sources that serve a blob from a cache of their own (compressed layers) throw the
        entry away and rebuild it; the others cannot do anything about it. Safe to call
        from several threads; each blob is rebuilt at most once per source.

        Returns:
            True when the blob was rebuilt and may now be right.
        """
        ...


def sniff(head: bytes) -> str | None:
    """``"gzip"``, ``"zstd"`` or None (uncompressed) from a blob's first 4 bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def read_document(source: ImageSource, desc: Descriptor) -> bytes:
    """Read a small JSON document (index/manifest/config) and verify its digest."""
    if desc.size > MAX_DOCUMENT_BYTES:
        raise SourceError(f"{desc.digest}: {desc.size} bytes is too large for a {desc.media_type}")
    with source.open_blob(desc) as stream:
        data = stream.read(desc.size + 1)
    if len(data) != desc.size or sha256_digest(data) != desc.digest:
        raise SourceError(f"blob {desc.digest} is corrupt: its content does not match its digest")
    return data


def iter_chunks(stream: IO[bytes], size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield up to ``size`` bytes from ``stream`` in chunks, never more than ``chunk`` at once."""
    remaining = size
    while remaining > 0:
        data = stream.read(min(chunk, remaining))
        if not data:
            break
        remaining -= len(data)
        yield data
