"""A registry's storage on this machine, for the Docker engine's own ``docker push``.

The engine asks (HEAD, or a cross-repository mount) before it uploads a layer. Here a blob is
there when every node of the run holds it already (what the nodes said before the push), or
when it was uploaded in this run: so the engine uploads exactly what some node lacks. Uploads
go to files in a private directory (0700, swept after ``kill -9`` like every temporary entry of
nodeload's), and each finished one is handed on at once (``on_blob``) while the engine goes on
with the next. Manifests are kept in memory. Nothing here talks to a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeload import scratch
from nodeload.errors import SourceError
from nodeload.image import sha256_digest
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, parse
from nodeload.registry.errors import (
    RegistryError,
    blob_unknown,
    invalid,
    manifest_unknown,
    too_many,
    upload_unknown,
)
from nodeload.registry.limits import Limits

_READ_CHUNK = 1 << 20


@dataclass
class SpoolUpload:
    """An upload in progress: a file that grows until the client names its digest."""

    uuid: str
    path: Path
    offset: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request body at a time


class SpoolStore:
    """Blobs the engine uploads, in local files; manifests in memory (see the module)."""

    def __init__(
        self,
        held: Mapping[str, int],
        on_blob: Callable[[str, int, Path], None],
        *,
        limits: Limits | None = None,
    ) -> None:
        """``held``: digest -> size of the blobs every node holds; ``on_blob(digest, size, path)``
        hears of each upload once it is complete and verified (called on the event loop)."""
        self.limits = limits or Limits()
        self._held = dict(held)
        self._on_blob = on_blob
        self._dir = Path(scratch.mkdtemp("nodeload-serve-"))
        self._blobs: dict[str, Path] = {}
        self._uploads: dict[str, SpoolUpload] = {}
        # Tag or digest -> (media type, body) of each manifest pushed.
        self.manifests: dict[str, tuple[str, bytes]] = {}

    def blob_path(self, digest: str) -> Path | None:
        """The file of a blob uploaded in this run."""
        return self._blobs.get(digest)

    async def blob_size(self, digest: str) -> int:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        path = self._blobs.get(digest)
        if path is not None:
            return path.stat().st_size
        if digest in self._held:
            return self._held[digest]
        raise blob_unknown(digest)

    async def read_blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]:
        """See :class:`~nodeload.registry.protocol.BlobStore` (only blobs uploaded here)."""
        path = self._blobs.get(digest)
        if path is None:
            raise blob_unknown(digest)

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as stream:
                while data := stream.read(_READ_CHUNK):
                    yield data

        return path.stat().st_size, chunks()

    async def mount(self, digest: str) -> bool:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        return digest in self._blobs or digest in self._held

    async def start_upload(self) -> SpoolUpload:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        if len(self._uploads) >= self.limits.uploads:
            raise too_many(f"{len(self._uploads)} uploads are open", self.limits.stall_seconds)
        uuid = secrets.token_hex(16)
        path = self._dir / f"upload-{uuid}"
        path.touch(mode=0o600)
        upload = self._uploads[uuid] = SpoolUpload(uuid, path)
        return upload

    def upload(self, uuid: str) -> SpoolUpload:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        try:
            return self._uploads[uuid]
        except KeyError:
            raise upload_unknown(uuid) from None

    async def append(self, upload: SpoolUpload, chunks: AsyncIterable[bytes]) -> None:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        async with upload.lock:
            with upload.path.open("ab") as spool:
                try:
                    async for data in chunks:
                        spool.write(data)
                        upload.hasher.update(data)
                        upload.offset += len(data)
                except ConnectionError as err:  # the engine went away (interrupted): an answer, no traceback
                    message = f"the upload broke off: {err}"
                    raise RegistryError(400, "BLOB_UPLOAD_INVALID", message, close=True) from err

    async def finish(self, upload: SpoolUpload, digest: str) -> None:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        self._uploads.pop(upload.uuid, None)
        if "sha256:" + upload.hasher.hexdigest() != digest:
            upload.path.unlink(missing_ok=True)
            raise invalid("DIGEST_INVALID", f"the uploaded bytes are not {digest}")
        path = self._dir / digest.replace(":", "-")
        os.replace(upload.path, path)
        if digest not in self._blobs:
            self._blobs[digest] = path
            self._on_blob(digest, upload.offset, path)

    async def cancel(self, upload: SpoolUpload) -> None:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        self._uploads.pop(upload.uuid, None)
        upload.path.unlink(missing_ok=True)

    async def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        if len(body) > MAX_DOCUMENT_BYTES:
            raise invalid("MANIFEST_INVALID", "the manifest is too large")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            raise invalid("DIGEST_INVALID", f"the manifest is {digest}, not {reference}")
        try:
            doc = parse(body, f"manifest {reference}")
        except SourceError as err:
            raise invalid("MANIFEST_INVALID", str(err)) from err
        entry = (media_type or doc.text("mediaType"), body)
        self.manifests[digest] = self.manifests[reference] = entry
        return digest

    async def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes]:
        """See :class:`~nodeload.registry.protocol.BlobStore`."""
        try:
            return self.manifests[reference]
        except KeyError:
            raise manifest_unknown(reference) from None

    async def tags(self, repository: str) -> list[str]:
        """See :class:`~nodeload.registry.protocol.BlobStore` (the engine's push: its tags)."""
        return sorted(ref for ref in self.manifests if not ref.startswith("sha256:"))

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """See :class:`~nodeload.registry.protocol.BlobStore` (the engine's push names none)."""
        return []

    def close(self) -> None:
        """Remove every file of the spool."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self._dir)
