"""OCI image layouts: a directory (``oci:DIR[:REF]``) or a tar of one (``oci-archive:FILE[:REF]``).

A layout is ``oci-layout`` + ``index.json`` + ``blobs/<alg>/<hex>``. Both forms
share everything but how a file is read: a directory is read directly, an
archive through a :class:`~nodeload.sources.archive.TarIndex`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Protocol

from nodeload.errors import ImageNotFound, SourceError
from nodeload.image import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    read_document,
)
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, Doc, parse
from nodeload.sources.archive import TarIndex
from nodeload.sources.base import Closeable, name_or_none
from nodeload.sources.confined import open_confined
from nodeload.sources.layer_cache import LayerCache
from nodeload.sources.streams import open_window

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_BLOB_PATH = re.compile(r"^blobs/(sha256)/([0-9a-f]{64})$")


def blob_path(digest: str) -> str:
    """The layout path of a blob: ``blobs/<alg>/<hex>``.

    Raises:
        SourceError: for a malformed digest (which could otherwise escape ``blobs/``).
    """
    match = _DIGEST.match(digest)
    if match:
        alg, hexpart = match.groups()
        length = _HEX_LENGTH.get(alg)
        if length is None or (len(hexpart) == length and re.fullmatch("[0-9a-f]+", hexpart)):
            return f"blobs/{alg}/{hexpart}"
    raise SourceError(f"invalid digest {digest!r}")


def digest_of_blob_path(name: str) -> str | None:
    """``sha256:<hex>`` for a path ``blobs/sha256/<hex>``, else None."""
    match = _BLOB_PATH.match(name)
    return f"{match.group(1)}:{match.group(2)}" if match else None


class BlobStore(Protocol):
    """Where a layout's files are: a directory or an indexed tar."""

    def describe(self, name: str) -> str:
        """The file's name for messages."""
        ...

    def read(self, name: str) -> bytes:
        """A small file's bytes (SourceError when missing)."""
        ...

    def open_named(self, name: str, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a file from ``offset`` (SourceError when missing)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class DirStore:
    """A layout directory, read without following links or leaving it (see ``confined``)."""

    def __init__(self, root: Path) -> None:
        """Read files under ``root``.

        Raises:
            SourceError: when ``root`` is not a directory.
        """
        if not root.is_dir():
            raise SourceError(f"{root}: no such directory")
        self.root = root

    def describe(self, name: str) -> str:
        """The file's path."""
        return str(self.root / name)

    def read(self, name: str) -> bytes:
        """A small file's bytes, at most MAX_DOCUMENT_BYTES of them."""
        fd = open_confined(self.root, name)
        with open(fd, "rb", closefd=True) as file:
            data = file.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise SourceError(f"{self.describe(name)} is too large for metadata")
        return data

    def open_named(self, name: str, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a file from ``offset``."""
        fd = open_confined(self.root, name)
        return open_window(fd, 0, os.fstat(fd).st_size, offset)

    def close(self) -> None:
        """Nothing to release."""


class TarStore:
    """A layout inside a tar archive."""

    def __init__(self, index: TarIndex) -> None:
        """Serve the members of ``index``."""
        self.index = index

    def describe(self, name: str) -> str:
        """``archive.tar:name``."""
        return self.index.describe(name)

    def read(self, name: str) -> bytes:
        """A small member's bytes."""
        return self.index.read(name)

    def open_named(self, name: str, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a member from ``offset``."""
        return self.index.open(self.index.member(name), offset)

    def close(self) -> None:
        """Delete the archive's decompressed copy, if any."""
        self.index.close()


def _load_json(store: BlobStore, name: str) -> Doc:
    return parse(store.read(name), store.describe(name))


def _check_layout(store: BlobStore) -> None:
    try:
        marker = _load_json(store, "oci-layout")
    except SourceError as exc:
        raise SourceError(f"not an OCI image layout: {exc}") from exc
    version = marker.text("imageLayoutVersion")
    if not version.startswith("1."):
        raise SourceError(f"{store.describe('oci-layout')}: unsupported imageLayoutVersion {version!r}")


def _index_entries(store: BlobStore) -> list[Descriptor]:
    index = _load_json(store, "index.json")
    if not isinstance(index.raw.get("manifests"), list):
        raise SourceError(f"{store.describe('index.json')} has no 'manifests' list")
    return [Descriptor.from_json(entry) for entry in index.objs("manifests")]


def _full_name(text: str) -> str | None:
    """``text`` normalized if it reads as an image name (``app:v1``, ``a/b``), else None."""
    if not any(c in text for c in ":/@"):
        return None  # a bare word like "v1" is a tag, not a name
    return name_or_none(text)


def _tag(text: str) -> str:
    full = _full_name(text)
    return full.rsplit(":", 1)[-1] if full and "@" not in full else text


def _names(entry: Descriptor) -> list[str]:
    return [entry.annotations[key] for key in (REF_NAME, CONTAINERD_NAME) if entry.annotations.get(key)]


def _label(entry: Descriptor) -> str:
    names = _names(entry)
    return names[0] if names else entry.digest


# Tiers of matching a REF against an entry's names, strictest first.
_MATCHERS: tuple[Callable[[str, str], bool], ...] = (
    lambda ref, name: ref == name,
    lambda ref, name: _full_name(ref) is not None and _full_name(ref) == _full_name(name),
    lambda ref, name: _tag(ref) == _tag(name),
)


def select_entry(entries: list[Descriptor], ref: str | None, where: str) -> Descriptor:
    """The index.json entry ``ref`` names (a tag like ``v1`` or a full name).

    Raises:
        ImageNotFound: when no entry matches ``ref``.
        SourceError: when the choice is empty or ambiguous.
    """
    if not entries:
        raise SourceError(f"{where} holds no images (its index.json lists none)")
    available = ", ".join(sorted(_label(e) for e in entries))
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        raise SourceError(
            f"{where} holds {len(entries)} images; choose one as {where}:REF, one of: {available}"
        )
    for matches in _MATCHERS:
        found = {e.digest: e for e in entries if any(matches(ref, n) for n in _names(e))}
        if len(found) == 1:
            return next(iter(found.values()))
        if found:
            raise SourceError(f"{ref!r} is ambiguous in {where}: {', '.join(map(_label, found.values()))}")
    raise ImageNotFound(f"no image {ref!r} in {where}; it holds: {available}")


class OciLayoutSource(Closeable):
    """An image of an OCI layout, directory or archive; not rewritable."""

    def __init__(self, store: BlobStore, ref: str | None, where: str) -> None:
        """Read the layout in ``store`` and pick the image ``ref`` names.

        ``where`` is the source as the user wrote it (``oci:DIR``), for messages.

        Raises:
            SourceError: for a missing or malformed layout (ImageNotFound for an unknown ref).
        """
        self._store = store
        _check_layout(store)
        entry = select_entry(_index_entries(store), ref, where)
        self._root = self._with_media_type(entry)
        names = [entry.annotations.get(CONTAINERD_NAME), entry.annotations.get(REF_NAME)]
        self._reference = next((n for n in map(_full_name, filter(None, names)) if n), None)

    def _with_media_type(self, entry: Descriptor) -> Descriptor:
        """The entry, its media type read from the document when index.json omits it."""
        if entry.media_type in INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES:
            return entry
        if entry.media_type:
            raise SourceError(f"{entry.digest}: unsupported media type {entry.media_type!r}")
        doc = parse(read_document(self, entry), f"{entry.digest} (an index.json entry)")
        kind = doc.text("mediaType") or (MEDIA_OCI_INDEX if "manifests" in doc else MEDIA_OCI_MANIFEST)
        return Descriptor(kind, entry.digest, entry.size, entry.annotations, entry.platform)

    @property
    def reference(self) -> str | None:
        """``io.containerd.image.name``, else a ref name that is a full image name."""
        return self._reference

    @property
    def root(self) -> Descriptor:
        """The chosen index.json entry: an index or a manifest."""
        return self._root

    @property
    def rewritable(self) -> bool:
        """False: the manifests are someone else's, digests must stay."""
        return False

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream ``blobs/<alg>/<hex>`` from ``offset``.

        Raises:
            SourceError: when the blob is missing or the digest malformed.
        """
        return self._store.open_named(blob_path(desc.digest), offset)

    def refresh(self, desc: Descriptor) -> bool:
        """False: a layout's blobs are what they are; a mismatch is the layout's fault."""
        return False

    def close(self) -> None:
        """Release the store (an archive's temporary copy)."""
        self._store.close()


def open_oci_layout(directory: Path, ref: str | None = None) -> OciLayoutSource:
    """The image ``ref`` selects in the layout directory ``directory``."""
    return OciLayoutSource(DirStore(directory), ref, f"oci:{directory}")


def open_oci_archive(
    path: Path, ref: str | None = None, *, cache: LayerCache | None = None
) -> OciLayoutSource:
    """The image ``ref`` selects in a tar (optionally gzip/zstd) of an OCI layout.

    A compressed archive is decompressed into ``cache``'s scratch directory;
    close the source to delete that copy.
    """
    store = TarStore(TarIndex(path, (cache or LayerCache()).scratch))
    try:
        return OciLayoutSource(store, ref, f"oci-archive:{path}")
    except BaseException:
        store.close()
        raise
