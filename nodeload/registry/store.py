"""The registry's storage: the content stores of the selected nodes.

A blob exists for a client when every node holds it (``HEAD`` is answered by the nodes
themselves), so a client uploads exactly when some node lacks it. Uploads go to the nodes
as they arrive, each into a containerd ingest that is committed with the digest the client
names at the end. When the nodes disagree about what they lack (a new node joined), the
upload is kept in a private local file instead and sent, once its digest is known, only
to the nodes without it. A manifest pushed by tag that is an image the node can run is
finished on each node with the push path's own target: children labelled, layers unpacked,
the image named last, CRI checked. Any other manifest is stored as content, a GC root whose
tag and subject are labels (see :mod:`~nodeload.registry.manifests`), so tag lists and
referrers are read from the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nodeload import scratch
from nodeload.containerd.client import ContainerdClient, IngestStream
from nodeload.errors import BlobMismatch, NodeloadError, SourceError
from nodeload.image import Descriptor, sha256_digest
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, Doc, parse
from nodeload.leftovers import LABEL_PREFIX
from nodeload.plan import LABEL_GC_CONTENT, manifest_labels
from nodeload.platforms import Platform
from nodeload.progress import ProgressSink
from nodeload.reference import parse_reference
from nodeload.registry.errors import (
    RegistryError,
    blob_unknown,
    invalid,
    manifest_unknown,
    too_many,
    upload_unknown,
)
from nodeload.registry.limits import Limits
from nodeload.registry.manifests import Documents, not_an_image, referrer, subject_of
from nodeload.registry.references import check_references
from nodeload.report import NodeResult
from nodeload.stores.base import PreparedImage, WriteOptions, Written
from nodeload.stores.containerd import ContainerdStore
from nodeload.transports.base import Transport

# A stored manifest (no image) is a GC root (containerd's own label) marked as ours; its tags
# and subject are labels too, so a later run finds them on the nodes.
LABEL_GC_ROOT = "containerd.io/gc.root"
LABEL_STORED = LABEL_PREFIX + "stored"
LABEL_TAG = LABEL_PREFIX + "tag."  # + the full name, docker.io/library/app:v1
LABEL_SUBJECT = LABEL_PREFIX + "subject"  # the digest a manifest refers to

_QUEUE_DEPTH = 4  # chunks in flight per node: the slowest node paces the upload


@dataclass
class ServedNode:
    """One node as the registry's storage: its containerd target, client and what it received."""

    name: str
    target: ContainerdStore
    client: ContainerdClient
    transport: Transport | None = None
    bytes_received: int = 0
    blobs_received: int = 0
    results: list[NodeResult] = field(default_factory=list)
    stored: list[StoredManifest] = field(default_factory=list)  # manifests kept that are no image
    errors: list[str] = field(default_factory=list)


@dataclass
class Upload:
    """A blob upload in progress (``/v2/NAME/blobs/uploads/UUID``)."""

    uuid: str
    nodes: list[ServedNode]  # written as the bytes arrive (empty when spooled)
    spool: Path | None = None  # the local copy, when the nodes disagree about what they lack
    offset: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    streams: dict[str, IngestStream] = field(default_factory=dict)  # node -> its open Write stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request body at a time
    touched: float = field(default_factory=lambda: asyncio.get_running_loop().time())  # last request

    @property
    def ref(self) -> str:
        """The containerd ingest of this upload on each node."""
        return f"nodeload-upload-{self.uuid}"


class NodesStore:
    """Blobs and manifests kept in every selected node's containerd."""

    def __init__(
        self,
        sessions: Sequence[ServedNode],
        namespace: str,
        progress: ProgressSink,
        *,
        name_from_source: bool = False,
        limits: Limits | None = None,
    ) -> None:
        """Serve ``sessions`` (open stores, each under a lease for the whole run).

        ``name_from_source``: the tags pushed are names found inside the pushed image, which
        may not repoint an existing image (see WriteOptions). ``limits``: what clients may ask.
        """
        self.sessions = list(sessions)
        self.name_from_source = name_from_source
        self.limits = limits or Limits()
        self._namespace, self._progress = namespace, progress
        self._uploads: dict[str, Upload] = {}
        self._lacking: dict[str, frozenset[str]] = {}  # digest -> nodes lacking it, from HEADs (oldest first)
        # Image name -> the root pushed under it last and its documents (what a node was given).
        self.received: dict[str, tuple[Descriptor, dict[str, bytes]]] = {}
        self._spool_dir: str | None = None

    # -- blobs ----------------------------------------------------------------------------------

    async def blob_size(self, digest: str) -> int:
        """The size of a blob every node holds.

        Raises:
            RegistryError: BLOB_UNKNOWN when a node lacks it.
        """
        infos = await asyncio.gather(*(s.client.content_info(digest) for s in self.sessions))
        lacking = frozenset(s.name for s, info in zip(self.sessions, infos, strict=True) if info is None)
        self._remember(digest, lacking)
        if lacking:
            raise blob_unknown(digest)
        return int(infos[0].size) if infos[0] is not None else 0

    def _remember(self, digest: str, lacking: frozenset[str]) -> None:
        """Record a HEAD's answer, forgetting the oldest past the bound (see Limits.head_records)."""
        self._lacking.pop(digest, None)
        self._lacking[digest] = lacking
        while len(self._lacking) > self.limits.head_records:
            del self._lacking[next(iter(self._lacking))]

    async def read_blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]:
        """A blob's size and bytes, from a node that holds it."""
        for session in self.sessions:
            info = await session.client.content_info(digest)
            if info is not None:
                return int(info.size), session.client.read_blob(digest)
        raise blob_unknown(digest)

    async def mount(self, digest: str) -> bool:
        """Cross-repository mount: nodes share one content store, so it is there if every node has it."""
        try:
            await self.blob_size(digest)
        except RegistryError:
            return False
        return True

    # -- uploads --------------------------------------------------------------------------------

    async def start_upload(self) -> Upload:
        """A new upload, streamed to every node, or spooled when the nodes disagree.

        Raises:
            RegistryError: 429 TOOMANYREQUESTS when ``limits.uploads`` are open and busy.
        """
        if len(self._uploads) >= self.limits.uploads:
            await self._drop_abandoned()
        if len(self._uploads) >= self.limits.uploads:
            raise too_many(
                f"{len(self._uploads)} uploads are open: finish or cancel one (DELETE its location) first",
                self.limits.stall_seconds,
            )
        uuid = secrets.token_hex(16)
        everyone = frozenset(s.name for s in self.sessions)
        pending = [nodes for nodes in self._lacking.values() if nodes]
        if all(nodes == everyone for nodes in pending):
            upload = Upload(uuid, list(self.sessions))
        else:  # we cannot tell yet which nodes need this blob: keep it here until its digest is known
            upload = Upload(uuid, [], spool=self._new_spool(uuid))
        self._uploads[uuid] = upload
        return upload

    async def _drop_abandoned(self) -> None:
        """Cancel the uploads no request has touched for ``limits.stall_seconds`` (the spec lets
        unfinished uploads time out)."""
        now = asyncio.get_running_loop().time()
        for upload in list(self._uploads.values()):
            if not upload.lock.locked() and now - upload.touched >= self.limits.stall_seconds:
                await self.cancel(upload)

    def upload(self, uuid: str) -> Upload:
        """The upload ``uuid`` (which a request is about to use)."""
        try:
            upload = self._uploads[uuid]
        except KeyError:
            raise upload_unknown(uuid) from None
        upload.touched = asyncio.get_running_loop().time()
        return upload

    async def append(self, upload: Upload, chunks: AsyncIterable[bytes]) -> None:
        """Add a request body's bytes to the upload (to its nodes as they arrive, or its spool).

        One body at a time per upload: two requests on one upload are taken in turn.
        """
        async with upload.lock:
            try:
                await self._append(upload, chunks)
            finally:
                upload.touched = asyncio.get_running_loop().time()

    async def _append(self, upload: Upload, chunks: AsyncIterable[bytes]) -> None:
        if upload.spool is not None:
            with upload.spool.open("ab") as spool:
                async for data in chunks:
                    spool.write(data)
                    upload.hasher.update(data)
                    upload.offset += len(data)
            return
        start = upload.offset
        queues = [asyncio.Queue[bytes | None](_QUEUE_DEPTH) for _ in upload.nodes]
        writers = [
            asyncio.ensure_future(self._feed_node(session, upload, start, queue))
            for session, queue in zip(upload.nodes, queues, strict=True)
        ]
        try:
            async for data in chunks:
                upload.hasher.update(data)
                upload.offset += len(data)
                for queue, writer in zip(queues, writers, strict=True):
                    if not writer.done():
                        await queue.put(data)
        finally:  # also when the client went away: what each node was given is written first
            for queue, writer in zip(queues, writers, strict=True):
                if not writer.done():
                    await queue.put(None)
            kept = await asyncio.gather(*writers)
            upload.nodes = [s for s, ok in zip(upload.nodes, kept, strict=True) if ok]

    async def _feed_node(
        self, session: ServedNode, upload: Upload, start: int, queue: asyncio.Queue[bytes | None]
    ) -> bool:
        """Write what arrives on ``queue`` into the node's ingest; False (recorded) if the node failed."""

        async def chunks() -> AsyncIterator[bytes]:
            while (data := await queue.get()) is not None:
                yield data

        try:
            stream = await self._stream(session, upload, start)
            end = await stream.append(chunks())
        except NodeloadError as err:
            session.errors.append(f"receiving upload {upload.ref}: {err}")
            failed = upload.streams.pop(session.name, None)
            if failed is not None:
                failed.close()
            while await queue.get() is not None:  # let the other nodes go on
                pass
            return False
        session.bytes_received += end - start
        return True

    async def _stream(self, session: ServedNode, upload: Upload, at: int) -> IngestStream:
        """The node's Write stream for ``upload``, opened on first use and kept to the commit.

        Raises:
            NodeloadError: the node's ingest is not at ``at`` (the stream is closed and dropped).
        """
        if session.name not in upload.streams:
            upload.streams[session.name] = await session.client.open_ingest(upload.ref)
        stream = upload.streams[session.name]
        if stream.offset != at:
            del upload.streams[session.name]
            stream.close()
            raise NodeloadError(f"the node holds {stream.offset} bytes of it, not {at}")
        return stream

    async def finish(self, upload: Upload, digest: str) -> None:
        """Commit the upload as ``digest`` on the nodes that lack it.

        Raises:
            RegistryError: DIGEST_INVALID when the bytes are not ``digest``.
        """
        del self._uploads[upload.uuid]
        if "sha256:" + upload.hasher.hexdigest() != digest:
            await self.cancel(upload)
            raise invalid("DIGEST_INVALID", f"the uploaded bytes are not {digest}")
        if upload.spool is not None:
            await self._send_spool(upload, digest)
        else:
            await asyncio.gather(*(self._commit(s, upload, digest) for s in upload.nodes))
        self._lacking.pop(digest, None)

    async def _commit(self, session: ServedNode, upload: Upload, digest: str) -> None:
        try:
            stream = await self._stream(session, upload, upload.offset)
            del upload.streams[session.name]
            if not await stream.commit(digest, {}):
                session.blobs_received += 1
        except BlobMismatch as err:
            session.errors.append(f"{digest}: {err}")
        except NodeloadError as err:
            session.errors.append(f"committing {digest}: {err}")

    async def _send_spool(self, upload: Upload, digest: str) -> None:
        assert upload.spool is not None
        spool = upload.spool
        desc = Descriptor("application/octet-stream", digest, upload.offset)

        def open_at(offset: int) -> AbstractContextManager[IO[bytes]]:
            stream = spool.open("rb")
            stream.seek(offset)
            return stream

        async def send(session: ServedNode) -> None:
            if await session.client.content_info(digest) is not None:
                return  # this node had it: nothing crosses the wire
            try:
                outcome = await session.client.write_blob(f"nodeload-{digest}", desc, open_at, {})
                session.bytes_received += outcome.bytes_sent
                session.blobs_received += 1
            except NodeloadError as err:
                session.errors.append(f"writing {digest}: {err}")

        try:
            await asyncio.gather(*(send(s) for s in self.sessions))
        finally:
            spool.unlink(missing_ok=True)

    async def cancel(self, upload: Upload) -> None:
        """Throw an upload away (its ingests, or its spool)."""
        self._uploads.pop(upload.uuid, None)
        for stream in upload.streams.values():
            stream.close()
        upload.streams.clear()
        if upload.spool is not None:
            upload.spool.unlink(missing_ok=True)
        for session in upload.nodes:
            with contextlib.suppress(Exception):
                await session.client.abort(upload.ref)

    def _new_spool(self, uuid: str) -> Path:
        if self._spool_dir is None:
            self._spool_dir = scratch.mkdtemp("nodeload-serve-")
        path = Path(self._spool_dir) / uuid
        path.touch(mode=0o600)
        return path

    async def close(self) -> None:
        """Abort unfinished uploads and remove spooled files."""
        for upload in list(self._uploads.values()):
            await self.cancel(upload)
        if self._spool_dir is not None:
            import shutil

            shutil.rmtree(self._spool_dir, ignore_errors=True)

    # -- manifests ----------------------------------------------------------------------------------

    async def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest or index on every node: pushed by tag, an image becomes a named image;
        anything else (an artifact, an image for another platform) is kept as content.

        What the manifest names is checked first (see :mod:`~nodeload.registry.references`): a
        fault of the manifest is the client's (4xx) and fails no node.

        Returns:
            The manifest's digest.

        Raises:
            RegistryError: a digest that does not match, a malformed document, a missing blob
                (4xx); 500 when no node could take it.
        """
        if len(body) > MAX_DOCUMENT_BYTES:
            raise invalid("MANIFEST_INVALID", "the manifest is too large")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            raise invalid("DIGEST_INVALID", f"the manifest is {digest}, not {reference}")
        try:
            doc = parse(body, f"manifest {reference}")
            root = Descriptor(media_type or doc.text("mediaType"), digest, len(body))
            subject = subject_of(doc)
            _references(doc)  # well-formed descriptors, or the client's error
        except SourceError as err:
            raise invalid("MANIFEST_INVALID", str(err)) from err
        referenced = await check_references(self.sessions, root, body, doc, self.limits)
        name = _image_name(repository, None if reference.startswith("sha256:") else reference)
        platform = _platform_of(doc, referenced.documents)
        image = _Image(root, body, doc, referenced.documents, name, platform, subject)
        ready = [s for s in self.sessions if s.name not in referenced.failed]
        outcomes = await asyncio.gather(*(self._finish(s, image) for s in ready))
        by_node = dict(zip((s.name for s in ready), outcomes, strict=True))
        _settle(name or digest, self.sessions, referenced.failed, by_node)
        return digest

    async def _finish(self, session: ServedNode, image: _Image) -> NodeloadError | None:
        """Finish the manifest on one node: an image with the push path's target (nothing but
        documents to send), anything else stored as content kept from GC."""
        source = Documents(image.root, image.documents, image.name)
        try:
            why_not = await asyncio.to_thread(not_an_image, source, image.platform or session.target.platform)
            writer = session.target.writer(self._namespace)
            if why_not is not None:
                await self._keep(session, image, why_not)
            elif image.name:
                await self._image(session, image, source)
            else:  # by digest (an index's child): stored with its references, named by the index later
                await writer.store_document(image.root, image.body, _references(image.doc))
            if image.subject:  # found by the referrers API
                await writer.client.set_labels(image.root.digest, {LABEL_SUBJECT: image.subject})
        except NodeloadError as err:
            return err
        return None

    async def _image(self, session: ServedNode, image: _Image, source: Documents) -> None:
        """Create (or move) the image record ``image.name`` as ``push`` does."""
        assert image.name is not None
        root, name = image.root, image.name
        result = NodeResult(node=session.name, image=name)
        options = WriteOptions(
            namespace=self._namespace,
            name=name,
            platform=image.platform,
            name_from_source=self.name_from_source,
        )
        written = Written()
        result.store(session.target.about)
        result.namespace, result.name = options.namespace, options.name
        result.delivered(await session.target.push(PreparedImage(source, options), options, written))
        result.count(written)
        self.received[name] = (root, image.documents)
        client = session.target.writer(self._namespace).client
        if "manifests" in image.doc:  # an index keeps every platform pushed, not just the node's
            await client.set_labels(root.digest, _references(image.doc))
        await _untag(client, name, keep=None)  # the tag is the image's now, not a stored manifest's
        session.results.append(result)

    async def _keep(self, session: ServedNode, image: _Image, why_not: str) -> None:
        """Store a manifest that is no image for this node: a GC root, its tag in a label."""
        writer = session.target.writer(self._namespace)
        labels = {**_references(image.doc), LABEL_GC_ROOT: _now(), LABEL_STORED: "manifest"}
        if image.name:
            labels[LABEL_TAG + image.name] = _now()
        await writer.store_document(image.root, image.body, labels)
        await writer.client.set_labels(image.root.digest, labels)  # also when the node held it already
        if image.name:
            await _untag(writer.client, image.name, keep=image.root.digest)
        session.stored.append(StoredManifest(image.root.digest, image.root.media_type, image.name, why_not))

    async def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes]:
        """A manifest's media type and bytes, by tag (a stored manifest's, else an image record's)
        or digest."""
        client = self.sessions[0].target.writer(self._namespace).client
        if reference.startswith("sha256:"):
            digest, media_type = reference, ""
        else:
            name = _image_name(repository, reference) or ""
            tagged = await client.find_labelled(LABEL_TAG + name)
            image = None if tagged else await client.get_image(name)
            if tagged:
                digest, media_type = tagged[0].digest, ""
            elif image is not None:
                digest, media_type = image.target.digest, image.target.media_type
            else:
                raise manifest_unknown(reference)
        if await client.content_info(digest) is None:
            raise manifest_unknown(reference)
        body = await _read_small(client, digest)
        if not media_type:
            try:
                media_type = parse(body, digest).text("mediaType")
            except SourceError:  # a blob that is no document: no manifest by that digest
                raise manifest_unknown(reference) from None
        return media_type, body

    async def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` that every node holds: image records, and stored manifests'
        tag labels."""
        prefix = (_image_name(repository, "tag") or "").removesuffix("tag")
        held = await asyncio.gather(*(self._tags(s, prefix) for s in self.sessions))
        return sorted(set.intersection(*held)) if held else []

    async def _tags(self, session: ServedNode, prefix: str) -> set[str]:
        client = session.target.writer(self._namespace).client
        names = set(await client.image_names())
        for info in await client.find_labelled(LABEL_STORED):
            names.update(key.removeprefix(LABEL_TAG) for key in info.labels if key.startswith(LABEL_TAG))
        return {name.removeprefix(prefix) for name in names if name.startswith(prefix)}

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests whose subject is ``digest``, those every node holds."""
        clients = [s.target.writer(self._namespace).client for s in self.sessions]
        found = await asyncio.gather(*(client.find_by_label(LABEL_SUBJECT, digest) for client in clients))
        common = set.intersection(*({info.digest for info in infos} for infos in found))
        listed = []
        for referrer_digest in sorted(common):
            body = await _read_small(clients[0], referrer_digest)
            try:
                doc = parse(body, referrer_digest)
                desc = Descriptor(doc.text("mediaType"), referrer_digest, len(body))
            except SourceError:
                continue
            listed.append(referrer(desc, doc))
        return listed


@dataclass(frozen=True)
class StoredManifest:
    """A manifest kept on a node as content, not as an image: what ``--json`` reports."""

    digest: str
    media_type: str
    name: str | None  # the name it was pushed under (None: by digest)
    why: str  # why it is no image for this node

    def to_json(self) -> dict[str, Any]:
        """The JSON object for ``--json``."""
        return {
            "digest": self.digest,
            "media_type": self.media_type,
            "name": self.name,
            "not_an_image": self.why,
        }


@dataclass(frozen=True)
class _Image:
    """A pushed manifest, checked, with the documents every node is given for it."""

    root: Descriptor
    body: bytes
    doc: Doc
    documents: dict[str, bytes]
    name: str | None  # the image created (None: pushed by digest)
    platform: Platform | None
    subject: str | None  # the manifest it refers to (OCI 1.1 referrers)


async def _untag(client: ContainerdClient, name: str, keep: str | None) -> None:
    """Take the tag ``name`` off every stored manifest but ``keep``."""
    for info in await client.find_labelled(LABEL_TAG + name):
        if info.digest != keep:
            await client.drop_labels(info.digest, [LABEL_TAG + name])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _read_small(client: ContainerdClient, digest: str) -> bytes:
    try:
        return await client.read_document(digest)
    except SourceError as err:
        raise invalid("MANIFEST_INVALID", str(err)) from err


def _settle(
    label: str,
    sessions: Sequence[ServedNode],
    unfit: dict[str, str],
    outcomes: dict[str, NodeloadError | None],
) -> None:
    """Record why nodes did not take manifest ``label``: ``unfit`` ones (they lack what it names)
    and those whose outcome is an error.

    Raises:
        RegistryError: 400 when every node failed on the documents themselves (SourceError: the
            image is at fault, and no node is), 500 when no node took it.
    """
    errors = {node: err for node, err in outcomes.items() if err is not None}
    if outcomes and len(errors) == len(outcomes) and all(isinstance(e, SourceError) for e in errors.values()):
        for session in sessions:
            if session.name in unfit:
                session.errors.append(f"{label}: {unfit[session.name]}")
        raise invalid("MANIFEST_INVALID", str(next(iter(errors.values()))))
    reasons = {**unfit, **{node: str(err) for node, err in errors.items()}}
    for session in sessions:
        if session.name in reasons:
            session.errors.append(f"{label}: {reasons[session.name]}")
    if len(errors) == len(outcomes):
        shown = "; ".join(f"{node}: {why}" for node, why in reasons.items())
        raise RegistryError(500, "UNKNOWN", f"no node took the manifest: {shown}")


def _references(doc: Doc) -> dict[str, str]:
    """The GC labels containerd puts on a manifest (config, layers) or an index (children)."""
    config = doc.opt_obj("config")
    if config is not None:
        layers = [Descriptor.from_json(layer) for layer in doc.objs("layers")]
        return manifest_labels(Descriptor.from_json(config), layers)
    return {
        f"{LABEL_GC_CONTENT}.m.{i}": child.text("digest") for i, child in enumerate(doc.objs("manifests"))
    }


def _platform_of(doc: Doc, documents: dict[str, bytes]) -> Platform | None:
    """A single-platform image is stored as it is (whatever the node runs); an index picks the node's."""
    config = doc.opt_obj("config")
    if config is None:
        return None
    body = documents.get(config.text("digest"))
    try:  # an artifact's config need not be JSON, nor name a platform
        platform = Platform.from_json(parse(body, "config")) if body else None
    except SourceError:
        return None
    return platform if platform and platform.os and platform.architecture else None


def _image_name(repository: str, tag: str | None) -> str | None:
    """The image created on the nodes: ``myapp:dev`` -> ``docker.io/library/myapp:dev``."""
    return parse_reference(f"{repository}:{tag}").normalized() if tag else None
