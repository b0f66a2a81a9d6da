"""A thin async client for the containerd services nodeload uses.

It knows containerd's conventions (namespace and lease metadata, error codes,
the content Write protocol) and nothing about images or plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import grpc
from google.protobuf import empty_pb2, field_mask_pb2
from grpc._cython import cygrpc  # its InternalError: see CoreError

from nodeload.containerd.api import (
    containerd_types_pb2 as types_pb,
)
from nodeload.containerd.api import (
    containers_pb2,
    containers_pb2_grpc,
    content_pb2,
    content_pb2_grpc,
    cri_pb2,
    cri_pb2_grpc,
    diff_pb2,
    diff_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    introspection_pb2,
    introspection_pb2_grpc,
    leases_pb2,
    leases_pb2_grpc,
    namespaces_pb2,
    namespaces_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    version_pb2_grpc,
)
from nodeload.errors import (
    BlobMismatch,
    ConnectionLost,
    ContainerdTimeout,
    ContainerdUnavailable,
    NodeDiskFull,
    NodeError,
    NodeUnreachable,
    PushFailed,
    SourceError,
)
from nodeload.image import Descriptor
from nodeload.jsondoc import MAX_DOCUMENT_BYTES
from nodeload.leftovers import INGEST_PREFIX, LEASE_PREFIX, Ingest, Lease, run_labels
from nodeload.platforms import Platform
from nodeload.wording import setting

# Errors after which a push resumes (a retry, or the next run): its lease is kept for it.
_INTERRUPTED = (
    ConnectionLost,
    ContainerdTimeout,
    ContainerdUnavailable,
    NodeUnreachable,
    asyncio.CancelledError,
)

# What grpc.aio raises, instead of AioRpcError, when a stream operation fails in its core
# (ExecuteBatchError on done_writing() as the channel dies): the call's own status says why.
CoreError = cygrpc.InternalError

# containerd refuses messages above 16 MiB; stay far below with room for headers.
WRITE_CHUNK = 1 << 20
# Writes of an upload in flight before their responses are read (they must be, or flow control stalls).
_UNANSWERED_WRITES = 16
# Seconds a call may take (and an upload may stand still) before containerd counts as hung.
DEFAULT_TIMEOUT = 60.0
# Unpacking is disk-bound: a layer gets the call deadline plus this much time per byte.
_APPLY_SECONDS_PER_BYTE = 1 / (8 << 20)
# Long enough for a slow link to carry a big image; a clean exit deletes the lease at once.
LEASE_EXPIRY = timedelta(hours=24)

ProgressCallback = Callable[[int], None]


# Leases this process holds right now, on any node: never swept as abandoned.
@dataclass(frozen=True)
class NodeInfo:
    """What containerd tells about itself."""

    version: str
    platform: Platform
    snapshotters: tuple[str, ...]
    cri_snapshotter: str | None
    has_cri: bool


@dataclass(frozen=True)
class WriteResult:
    """Outcome of one blob write: bytes sent now and where the ingest resumed."""

    bytes_sent: int
    resumed_from: int
    already_existed: bool = False


def _code(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()


_DISK_FULL = "no space left on device"
# What grpc.aio records when a write fails in its core because the server already ended the
# call; the server's own status replaces it a moment later (see _settled_error).
_CORE_PLACEHOLDER = "Internal error from Core"


def rpc_error(what: str, err: grpc.aio.AioRpcError) -> NodeError:
    """The user-facing error for a failed containerd call."""
    detail = err.details() or str(err.code())
    if _DISK_FULL in detail:
        return NodeDiskFull(f"node disk is full while {what}: {detail}")
    if detail == _CORE_PLACEHOLDER:
        return PushFailed(f"containerd ended {what} without giving a reason (is the node's disk full?)")
    if _code(err) == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ContainerdTimeout(
            f"containerd did not answer in time while {what} (is it hung or overloaded? {setting('timeout')} "
            "sets how long to wait)"
        )
    if _code(err) == grpc.StatusCode.UNAVAILABLE:
        # The tunnel or containerd went away: not a refusal by containerd.
        return ConnectionLost(f"lost the connection to containerd while {what}: {detail}")
    return PushFailed(f"containerd refused {what}: {err.code().name}: {detail}")


def _raise_push_error(what: str, err: grpc.aio.AioRpcError) -> None:
    raise rpc_error(what, err) from err


async def _status_of(call: Any, wait: float = 5.0) -> grpc.aio.AioRpcError:
    """The status a stream ended with, after one of its operations failed in gRPC's core
    (ExecuteBatchError: the channel died under it, as when the SSH session drops)."""
    meta = grpc.aio.Metadata()
    try:
        code, details = await asyncio.wait_for(asyncio.gather(call.code(), call.details()), wait)
    except TimeoutError:
        code, details = grpc.StatusCode.UNAVAILABLE, "the stream failed and the call did not end"
    if code == grpc.StatusCode.OK:
        code, details = grpc.StatusCode.UNAVAILABLE, "the stream failed in gRPC's core"
    return grpc.aio.AioRpcError(code, meta, meta, details)


class ContainerdClient:
    """Async client of one containerd socket, bound to one namespace (:meth:`bound` gives another
    namespace's client over the same connection)."""

    def __init__(
        self,
        address: str,
        namespace: str = "k8s.io",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        held: set[str] | None = None,
    ) -> None:
        """Connect lazily to ``address`` (a gRPC target like ``unix:/path``).

        ``timeout`` is the deadline of each call, and for a blob upload the longest
        time without progress, after which containerd is considered hung. ``held`` is where
        the leases this process holds are listed while held (so that a sweep of dead runs'
        leases spares them): the caller's, shared by every client it makes.
        """
        self.namespace = namespace
        self.timeout = timeout
        self.held = held if held is not None else set()
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.default_authority", "localhost"),
                ("grpc.max_receive_message_length", 32 << 20),
                ("grpc.max_send_message_length", 32 << 20),
            ],
        )
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._leases = leases_pb2_grpc.LeasesStub(self._channel)
        self._snapshots = snapshots_pb2_grpc.SnapshotsStub(self._channel)
        self._diff = diff_pb2_grpc.DiffStub(self._channel)
        self._introspection = introspection_pb2_grpc.IntrospectionStub(self._channel)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._namespaces = namespaces_pb2_grpc.NamespacesStub(self._channel)
        self._cri_runtime = cri_pb2_grpc.RuntimeServiceStub(self._channel)
        self._cri_images = cri_pb2_grpc.ImageServiceStub(self._channel)
        self._containers = containers_pb2_grpc.ContainersStub(self._channel)
        self.lease: str | None = None

    def bound(self, namespace: str) -> ContainerdClient:
        """A client of ``namespace`` over this one's connection, holding no lease yet (closing
        either closes the connection of both)."""
        view = copy.copy(self)
        view.namespace, view.lease = namespace, None
        return view

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._channel.close()

    def _opts(self, *, lease: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments of every call: namespace and lease metadata, and a deadline."""
        return {"metadata": self._md(lease=lease), "timeout": timeout or self.timeout}

    def _md(self, *, lease: bool = True) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = [("containerd-namespace", self.namespace)]
        if lease and self.lease:
            md.append(("containerd-lease", self.lease))
        return tuple(md)

    # -- about the node -------------------------------------------------

    async def version(self, timeout: float | None = None) -> str:
        """containerd's version; also proves the socket answers."""
        resp = await self._version.Version(empty_pb2.Empty(), timeout=timeout or min(10.0, self.timeout))
        return str(resp.version)

    async def node_info(self) -> NodeInfo:
        """Version, platform and snapshotters of the node's containerd."""
        # One round trip for all three questions: they do not depend on each other.
        version, resp, cri_status = await asyncio.gather(
            self.version(),
            self._introspection.Plugins(introspection_pb2.PluginsRequest(), **self._opts()),
            self._cri_snapshotter(),
        )
        platform: Platform | None = None
        snapshotters: list[str] = []
        has_cri = False
        for plugin in resp.plugins:
            ok = not plugin.HasField("init_err") or not plugin.init_err.message
            if plugin.type == "io.containerd.snapshotter.v1" and ok:
                snapshotters.append(plugin.id)
            if plugin.type == "io.containerd.grpc.v1" and plugin.id == "cri" and ok:
                has_cri = True
            if platform is None and plugin.type.startswith("io.containerd.runtime") and plugin.platforms:
                p = plugin.platforms[0]
                platform = Platform(p.os, p.architecture, p.variant).normalized()
        if platform is None:
            platform = next(
                (
                    Platform(p.os, p.architecture, p.variant).normalized()
                    for plugin in resp.plugins
                    for p in plugin.platforms
                ),
                Platform("linux", "amd64"),
            )
        cri_snapshotter = cri_status if has_cri else None
        return NodeInfo(version, platform, tuple(snapshotters), cri_snapshotter, has_cri)

    async def _cri_snapshotter(self) -> str | None:
        """The snapshotter the CRI plugin (kubelet's images) is configured with."""
        try:
            resp = await self._cri_runtime.Status(
                cri_pb2.StatusRequest(verbose=True), timeout=min(10.0, self.timeout)
            )
        except grpc.aio.AioRpcError:
            return None
        try:
            config = json.loads(resp.info.get("config", "{}"))
            return str(config["containerd"]["snapshotter"]) or None
        except (ValueError, KeyError, TypeError):
            return None

    # -- leases -----------------------------------------------------------

    @asynccontextmanager
    async def leased(self, image: str | None = None) -> AsyncIterator[str]:
        """Hold a lease so garbage collection keeps half-pushed content.

        The lease expires by itself if we die, so an interrupted push leaves
        nothing pinned forever; a clean exit deletes it at once, and so does a failure
        that ends the push. An interruption (Ctrl-C) or a lost session (the connection or
        containerd went away: the channel may well be back already) keeps it: deleting
        it would let containerd collect the partial uploads that the retry, or the next
        run, resumes (they adopt the lease's uploads and then remove it). Under a lease
        already held (``nodeload serve`` holds one for its whole run), that one is used.
        ``image`` is recorded in the lease's labels (what ``nodeload gc`` says it was for).
        """
        if self.lease:
            yield self.lease
            return
        now = datetime.now(UTC)
        labels = run_labels(image, now)
        labels["containerd.io/gc.expire"] = (now + LEASE_EXPIRY).strftime("%Y-%m-%dT%H:%M:%SZ")
        lease_id = f"{LEASE_PREFIX}{secrets.token_hex(6)}"
        await self._leases.Create(
            leases_pb2.CreateRequest(id=lease_id, labels=labels), **self._opts(lease=False)
        )
        self.lease = lease_id
        self.held.add(lease_id)
        keep = False
        try:
            yield lease_id
        except BaseException as err:
            keep = not isinstance(err, Exception) or isinstance(err, _INTERRUPTED)
            raise
        finally:
            self.lease = None
            self.held.discard(lease_id)
            # If this fails (the node is gone), the next run from here or nodeload gc removes it.
            if not keep:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.delete_lease(lease_id)

    async def leases(self) -> list[Lease]:
        """nodeload's leases in this namespace."""
        req = leases_pb2.ListRequest(filters=[f'id~="^{LEASE_PREFIX}"'])
        resp = await self._leases.List(req, **self._opts(lease=False))
        return [
            Lease(lease.id, lease.created_at.ToDatetime(tzinfo=UTC), dict(lease.labels))
            for lease in resp.leases
        ]

    async def delete_lease(self, lease_id: str) -> None:
        """Delete a lease (what it alone pinned becomes collectable); a missing one is fine."""
        try:
            await self._leases.Delete(leases_pb2.DeleteRequest(id=lease_id), **self._opts(lease=False))
        except grpc.aio.AioRpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def ingests(self) -> list[Ingest]:
        """nodeload's unfinished uploads in this namespace."""
        req = content_pb2.ListStatusesRequest(filters=[f'ref~="^{INGEST_PREFIX}"'])
        resp = await self._content.ListStatuses(req, **self._opts(lease=False))
        return [
            Ingest(s.ref, int(s.offset), int(s.total), s.updated_at.ToDatetime(tzinfo=UTC))
            for s in resp.statuses
        ]

    async def namespace_names(self) -> list[str]:
        """Every namespace of this containerd."""
        resp = await self._namespaces.List(namespaces_pb2.ListNamespacesRequest(), **self._opts(lease=False))
        return sorted(ns.name for ns in resp.namespaces)

    async def protect(
        self, digests: Iterable[str], snapshots: Iterable[tuple[str, str]] = (), ingests: Iterable[str] = ()
    ) -> None:
        """Add blobs, (snapshotter, key) snapshots and unfinished uploads the node has to our lease.

        Until the image record exists, only the lease keeps them: without this, a
        deletion elsewhere on the node (kubelet's image GC, say) could collect them
        mid-push and leave the new image incomplete.
        """
        if not self.lease:
            raise RuntimeError("protect() needs a lease")
        resources = [leases_pb2.Resource(id=d, type="content") for d in digests]
        resources += [leases_pb2.Resource(id=key, type=f"snapshots/{name}") for name, key in snapshots]
        resources += [leases_pb2.Resource(id=ref, type="ingests") for ref in ingests]
        await asyncio.gather(
            *(
                self._leases.AddResource(
                    leases_pb2.AddResourceRequest(id=self.lease, resource=resource), **self._opts(lease=False)
                )
                for resource in resources
            )
        )

    async def unprotect(self, digests: Iterable[str]) -> None:
        """Take blobs out of our lease again (what else keeps them decides whether they stay)."""
        if not self.lease:
            raise RuntimeError("unprotect() needs a lease")
        await asyncio.gather(
            *(
                self._leases.DeleteResource(
                    leases_pb2.DeleteResourceRequest(
                        id=self.lease, resource=leases_pb2.Resource(id=d, type="content")
                    ),
                    **self._opts(lease=False),
                )
                for d in digests
            )
        )

    # -- content ----------------------------------------------------------

    async def content_info(self, digest: str) -> content_pb2.Info | None:
        """The content store's record of a blob, or None when it is absent."""
        try:
            resp = await self._content.Info(content_pb2.InfoRequest(digest=digest), **self._opts())
        except grpc.aio.AioRpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        info: content_pb2.Info = resp.info
        return info

    async def find_by_label(self, key: str, value: str) -> list[content_pb2.Info]:
        """Blobs whose label ``key`` equals ``value``."""
        flt = f'labels."{key}"=="{value}"'
        found: list[content_pb2.Info] = []
        async for resp in self._content.List(content_pb2.ListContentRequest(filters=[flt]), **self._opts()):
            found.extend(resp.info)
        return found

    async def find_labelled(self, key: str) -> list[content_pb2.Info]:
        """Blobs that carry the label ``key`` (whatever its value)."""
        found: list[content_pb2.Info] = []
        request = content_pb2.ListContentRequest(filters=[f'labels."{key}"'])
        async for resp in self._content.List(request, **self._opts()):
            found.extend(resp.info)
        return found

    async def read_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        """A blob's bytes from ``offset``, as containerd sends them (no deadline: blobs are big)."""
        req = content_pb2.ReadContentRequest(digest=digest, offset=offset, size=0)
        try:
            async for resp in self._content.Read(req, metadata=self._md()):
                yield resp.data
        except grpc.aio.AioRpcError as err:
            _raise_push_error(f"reading {digest}", err)

    async def open_ingest(self, ref: str) -> IngestStream:
        """A Write stream on the ingest ``ref`` (new or partial), kept open for appends and the
        commit (see :class:`IngestStream`); its ``offset`` says how much the node holds."""
        stream = IngestStream(self, ref)
        await stream.open()
        return stream

    async def read_document(self, digest: str) -> bytes:
        """A small blob whole (a manifest, an index, a config).

        Raises:
            SourceError: when it is larger than any document may be (as jsondoc.parse says).
        """
        data = bytearray()
        async for chunk in self.read_blob(digest):
            data += chunk
            if len(data) > MAX_DOCUMENT_BYTES:
                raise SourceError(f"{digest} is too large for a document")
        return bytes(data)

    async def read_head(self, digest: str, size: int) -> bytes:
        """The first ``size`` bytes of a blob (to sniff its compression)."""
        req = content_pb2.ReadContentRequest(digest=digest, offset=0, size=size)
        data = b""
        async for resp in self._content.Read(req, **self._opts()):
            data += resp.data
        return data[:size]

    async def set_labels(self, digest: str, labels: Mapping[str, str]) -> None:
        """Add or replace some labels on a blob, leaving the others alone."""
        if not labels:
            return
        info = content_pb2.Info(digest=digest, labels=dict(labels))
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
        try:
            await self._content.Update(content_pb2.UpdateRequest(info=info, update_mask=mask), **self._opts())
        except grpc.aio.AioRpcError as err:
            _raise_push_error(f"labelling {digest}", err)

    async def drop_labels(self, digest: str, keys: Iterable[str]) -> None:
        """Remove some labels from a blob (a key named in the mask but absent from the info goes)."""
        paths = [f"labels.{k}" for k in keys]
        if not paths:
            return
        info = content_pb2.Info(digest=digest)
        mask = field_mask_pb2.FieldMask(paths=paths)
        try:
            await self._content.Update(content_pb2.UpdateRequest(info=info, update_mask=mask), **self._opts())
        except grpc.aio.AioRpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                _raise_push_error(f"labelling {digest}", err)

    async def ingest_offset(self, ref: str) -> int | None:
        """Bytes already received for an unfinished ingest, or None."""
        try:
            resp = await self._content.Status(content_pb2.StatusRequest(ref=ref), **self._opts())
        except grpc.aio.AioRpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return int(resp.status.offset)

    async def abort(self, ref: str) -> None:
        """Throw away an unfinished ingest."""
        try:
            await self._content.Abort(content_pb2.AbortRequest(ref=ref), **self._opts())
        except grpc.aio.AioRpcError as err:
            if _code(err) != grpc.StatusCode.NOT_FOUND:
                raise

    async def write_blob(
        self,
        ref: str,
        desc: Descriptor,
        open_at: Callable[[int], AbstractContextManager[IO[bytes]]],
        labels: Mapping[str, str],
        progress: ProgressCallback | None = None,
    ) -> WriteResult:
        """Write one blob through the content Write stream, resuming an ingest.

        containerd verifies size and digest at commit. A ref locked by another
        writer is waited for as long as that writer makes progress; a partial
        ingest that fails verification is aborted and written again once.
        ``bytes_sent`` counts every byte written, across attempts.
        """
        attempt = _Attempt()
        try:
            return await self._write_attempts(ref, desc, open_at, labels, progress, attempt)
        except NodeError as err:
            err.bytes_sent = attempt.sent  # they crossed the wire all the same
            raise

    async def _write_attempts(
        self,
        ref: str,
        desc: Descriptor,
        open_at: Callable[[int], AbstractContextManager[IO[bytes]]],
        labels: Mapping[str, str],
        progress: ProgressCallback | None,
        attempt: _Attempt,
    ) -> WriteResult:
        delay, restarted, unexplained = 0.1, False, 0
        watch = _LockWatch()
        while True:
            try:
                await self._write_once(ref, desc, open_at, labels, progress, attempt)
                # Resumed: what the node held before this call, not what an earlier attempt sent.
                return WriteResult(attempt.sent, attempt.found or 0)
            except TimeoutError:
                raise ContainerdTimeout(
                    f"containerd stopped taking data while writing {desc.digest} (no progress for "
                    f"{self.timeout:.0f}s; is it hung? {setting('timeout')} sets how long to wait)"
                ) from None
            except grpc.aio.AioRpcError as err:
                code, detail = _code(err), err.details() or ""
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    return WriteResult(attempt.sent, 0, already_existed=True)
                if code == grpc.StatusCode.UNAVAILABLE and "locked" in detail:
                    if not watch.still_moving(await self.ingest_offset(ref)):
                        raise PushFailed(
                            f"writing {desc.digest}: ingest {ref} is locked by another writer "
                            "that made no progress for a minute"
                        ) from err
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
                    if attempt.resumed_from == 0 and "digest" in detail:
                        # Every byte came from the source in this attempt: the source is wrong.
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await self.abort(ref)
                        raise BlobMismatch(
                            f"the source's bytes for {desc.digest} do not match that digest ({detail})"
                        ) from err
                    if not restarted:
                        restarted = True
                        await self.abort(ref)  # a partial ingest that does not verify: start over once
                        continue
                if detail == _CORE_PLACEHOLDER and unexplained < 2:
                    # grpc lost the server's reason for ending the stream (it raced our next
                    # chunk). Resume: the same failure then comes back with its reason.
                    unexplained += 1
                    continue
                if _DISK_FULL in detail:
                    # A partial ingest cannot resume until space is freed, and it holds the very
                    # space that ran out (invisible to `ctr content active` once the stream died):
                    # leaving it would keep the node's disk full. Discard it, best effort.
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await self.abort(ref)
                _raise_push_error(f"writing {desc.digest}", err)

    async def _write_once(
        self,
        ref: str,
        desc: Descriptor,
        open_at: Callable[[int], AbstractContextManager[IO[bytes]]],
        labels: Mapping[str, str],
        progress: ProgressCallback | None,
        attempt: _Attempt,
    ) -> WriteResult:
        # No deadline on the whole stream (a big blob on a slow link takes long); instead the
        # deadline moves forward with every chunk containerd takes: TimeoutError when it stalls.
        async with asyncio.timeout(self.timeout) as deadline:
            return await self._stream_blob(ref, desc, open_at, labels, progress, attempt, deadline)

    async def _stream_blob(
        self,
        ref: str,
        desc: Descriptor,
        open_at: Callable[[int], AbstractContextManager[IO[bytes]]],
        labels: Mapping[str, str],
        progress: ProgressCallback | None,
        attempt: _Attempt,
        deadline: asyncio.Timeout,
    ) -> WriteResult:
        loop = asyncio.get_running_loop()
        call = self._content.Write(metadata=self._md())
        req = content_pb2.WriteContentRequest
        # STAT with the expected digest also adds an existing blob to our lease, then
        # answers ALREADY_EXISTS; otherwise it reports how much a partial ingest holds.
        await call.write(req(action=content_pb2.STAT, ref=ref, total=desc.size, expected=desc.digest))
        status = await call.read()
        if status is grpc.aio.EOF:
            await call  # raises the call's error, if it ended with one
            raise PushFailed(f"containerd closed the write of {desc.digest} unexpectedly")
        offset = int(status.offset)
        if offset > desc.size:  # cannot be this blob: let write_blob abort it and start over
            call.cancel()
            meta = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(grpc.StatusCode.FAILED_PRECONDITION, meta, meta, "stale ingest")
        resumed_from = attempt.resumed_from = offset
        if attempt.found is None:
            attempt.found = offset
        drained = asyncio.ensure_future(_drain(call))
        try:
            async with _opened_in_thread(open_at(offset)) as stream:
                async for data in _read_ahead(stream, desc.size - offset):
                    if not data:
                        raise PushFailed(f"source ended early while sending {desc.digest}")
                    await call.write(req(action=content_pb2.WRITE, ref=ref, offset=offset, data=data))
                    deadline.reschedule(loop.time() + self.timeout)
                    offset += len(data)
                    attempt.sent += len(data)
                    if progress:
                        progress(len(data))
            await call.write(
                req(
                    action=content_pb2.COMMIT,
                    ref=ref,
                    offset=offset,
                    total=desc.size,
                    expected=desc.digest,
                    labels=dict(labels),
                )
            )
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, CoreError):
            # The server ended the call early (e.g. its disk filled up), or the channel died (the
            # SSH session dropped). A write then fails with InvalidStateError ("RPC already
            # finished", which used to escape as a traceback), AioRpcError or, from gRPC's core,
            # ExecuteBatchError; in each case the drain task carries the call's real status.
            pass
        except BaseException:
            call.cancel()
            drained.cancel()
            raise
        try:
            await drained
        except grpc.aio.AioRpcError as err:
            raise await _settled_error(call, err) from None
        return WriteResult(offset - resumed_from, resumed_from)

    # -- snapshots and unpacking ------------------------------------------

    async def snapshot_exists(self, snapshotter: str, key: str) -> bool:
        """Whether a committed snapshot ``key`` exists."""
        try:
            resp = await self._snapshots.Stat(
                snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=key), **self._opts()
            )
        except grpc.aio.AioRpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return bool(resp.info.kind == snapshots_pb2.COMMITTED)

    async def apply_layer(
        self, snapshotter: str, layer: Descriptor, parent: str, chain_id: str, diff_id: str
    ) -> bool:
        """Unpack one layer on top of ``parent`` into a snapshot named ``chain_id``.

        Returns False when someone else committed the same snapshot meanwhile.
        """
        key = f"extract-nodeload-{secrets.token_hex(6)} {chain_id}"
        labels = {"containerd.io/snapshot.ref": chain_id}
        try:
            prepared = await self._snapshots.Prepare(
                snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=snapshotter, key=key, parent=parent, labels=labels
                ),
                **self._opts(),
            )
        except grpc.aio.AioRpcError as err:
            # The snapshot.ref label makes Prepare fail this way once someone else (kubelet,
            # a concurrent push) committed the same chain: then the layer is done.
            if _code(err) == grpc.StatusCode.ALREADY_EXISTS and await self.snapshot_exists(
                snapshotter, chain_id
            ):
                return False
            _raise_push_error(f"preparing snapshot for {layer.digest}", err)
        try:
            applied = await self._diff.Apply(
                diff_pb2.ApplyRequest(diff=_to_pb(layer), mounts=prepared.mounts),
                **self._opts(timeout=self.timeout + layer.size * _APPLY_SECONDS_PER_BYTE),
            )
            if applied.applied.digest != diff_id:
                raise PushFailed(
                    f"layer {layer.digest} unpacked to {applied.applied.digest}, "
                    f"but the image config says {diff_id}"
                )
            await self._snapshots.Commit(
                snapshots_pb2.CommitSnapshotRequest(
                    snapshotter=snapshotter, name=chain_id, key=key, labels=labels
                ),
                **self._opts(),
            )
            return True
        except grpc.aio.AioRpcError as err:
            await self._remove_snapshot(snapshotter, key)
            if _code(err) == grpc.StatusCode.ALREADY_EXISTS:
                return False
            _raise_push_error(f"unpacking {layer.digest}", err)
        except BaseException:
            await self._remove_snapshot(snapshotter, key)
            raise
        return False  # unreachable: _raise_push_error always raises

    async def _remove_snapshot(self, snapshotter: str, key: str) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._snapshots.Remove(
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key), **self._opts()
            )

    # -- images -------------------------------------------------------------

    async def get_image(self, name: str) -> images_pb2.Image | None:
        """The image record ``name``, or None."""
        try:
            resp = await self._images.Get(images_pb2.GetImageRequest(name=name), **self._opts())
        except grpc.aio.AioRpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        image: images_pb2.Image = resp.image
        return image

    async def images(self) -> list[images_pb2.Image]:
        """Every image record of the namespace."""
        resp = await self._images.List(images_pb2.ListImagesRequest(), **self._opts())
        return list(resp.images)

    async def delete_image(self, name: str, *, sync: bool = False) -> bool:
        """Delete the image record ``name``; False when there was none. ``sync``: containerd runs
        its garbage collection before answering (what nothing references any more is gone)."""
        req = images_pb2.DeleteImageRequest(name=name, sync=sync)
        try:
            await self._images.Delete(req, **self._opts(timeout=self.timeout * (4 if sync else 1)))
        except grpc.aio.AioRpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return False
            _raise_push_error(f"deleting image {name}", err)
        return True

    async def content_sizes(self) -> dict[str, int]:
        """Digest -> size of every blob of the namespace."""
        sizes: dict[str, int] = {}
        async for resp in self._content.List(content_pb2.ListContentRequest(), **self._opts()):
            sizes.update((info.digest, int(info.size)) for info in resp.info)
        return sizes

    async def containers(self) -> list[containers_pb2.Container]:
        """Every container record of the namespace (made by ctr, nerdctl, CRI...)."""
        resp = await self._containers.List(containers_pb2.ListContainersRequest(), **self._opts())
        return list(resp.containers)

    async def cri_containers(self) -> list[cri_pb2.Container]:
        """kubelet's containers, as the CRI plugin lists them (with their state and image ID)."""
        resp = await self._cri_runtime.ListContainers(
            cri_pb2.ListContainersRequest(), timeout=min(10.0, self.timeout)
        )
        return list(resp.containers)

    async def image_names(self) -> list[str]:
        """The names of every image record in the namespace."""
        return [image.name for image in await self.images()]

    async def put_image(self, name: str, target: Descriptor, labels: Mapping[str, str] | None = None) -> None:
        """Create the image record, or point an existing one at ``target``."""
        image = images_pb2.Image(name=name, target=_to_pb(target), labels=dict(labels or {}))
        try:
            await self._images.Create(images_pb2.CreateImageRequest(image=image), **self._opts())
            return
        except grpc.aio.AioRpcError as err:
            if _code(err) != grpc.StatusCode.ALREADY_EXISTS:
                _raise_push_error(f"creating image {name}", err)
        paths = ["target", *(f"labels.{k}" for k in (labels or {}))]
        try:
            await self._images.Update(
                images_pb2.UpdateImageRequest(image=image, update_mask=field_mask_pb2.FieldMask(paths=paths)),
                **self._opts(),
            )
        except grpc.aio.AioRpcError as err:
            _raise_push_error(f"updating image {name}", err)

    async def cri_image_id(self, name: str) -> str | None:
        """The image id the CRI plugin reports for ``name`` (what kubelet sees)."""
        req = cri_pb2.ImageStatusRequest(image=cri_pb2.ImageSpec(image=name))
        try:
            resp = await self._cri_images.ImageStatus(req, timeout=min(10.0, self.timeout))
        except grpc.aio.AioRpcError:
            return None
        return str(resp.image.id) if resp.HasField("image") and resp.image.id else None

    async def cri_pull(self, ref: str, timeout: float) -> str:
        """Have the CRI plugin pull ``ref`` as kubelet would (through the node's registry mirror
        configuration); the image ID it reports.

        Raises:
            grpc.aio.AioRpcError: the pull failed (no mirror, mirror down, not found...).
        """
        req = cri_pb2.PullImageRequest(image=cri_pb2.ImageSpec(image=ref))
        resp = await self._cri_images.PullImage(req, timeout=timeout)
        return str(resp.image_ref)


class _Attempt:
    """Bytes sent for one blob across attempts, where the latest attempt started, and what the
    node held when the first one asked."""

    def __init__(self) -> None:
        self.sent = 0
        self.resumed_from = 0
        self.found: int | None = None


class _LockWatch:
    """Tells whether another writer holding an ingest lock still makes progress."""

    PATIENCE = 60.0

    def __init__(self) -> None:
        self._offset: int | None = None
        self._since = time.monotonic()

    def still_moving(self, offset: int | None) -> bool:
        """Record the ingest's offset; False once it stood still for PATIENCE seconds."""
        now = time.monotonic()
        if offset != self._offset:
            self._offset, self._since = offset, now
        return now - self._since < self.PATIENCE


@asynccontextmanager
async def _opened_in_thread(opener: AbstractContextManager[IO[bytes]]) -> AsyncIterator[IO[bytes]]:
    """Enter and exit a source's stream in a worker thread (opening may be a network request)."""
    stream = await asyncio.to_thread(opener.__enter__)
    try:
        yield stream
    finally:
        await asyncio.to_thread(opener.__exit__, None, None, None)


async def _read_ahead(stream: IO[bytes], size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of ``stream`` in chunks (b"" if it ends early), each read in a worker thread
    while the previous one is being sent: a source on the network (a registry, a local
    containerd) never blocks the event loop the other nodes' transfers run on."""
    loop = asyncio.get_running_loop()
    remaining = size
    pending = loop.run_in_executor(None, stream.read, min(WRITE_CHUNK, remaining))
    try:
        while remaining > 0:
            data = await pending
            remaining -= len(data)
            if data and remaining > 0:
                pending = loop.run_in_executor(None, stream.read, min(WRITE_CHUNK, remaining))
            yield data
            if not data:
                return
    finally:
        if not pending.done():
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())


class IngestStream:
    """One ingest written through a single content Write stream, open across appends and the commit.

    A registry upload arrives in separate requests (PATCH, then PUT with the digest).
    containerd hashes an ingest as it is written to; a new stream on a partial ingest first
    reads all of it back to hash it. Keeping one stream spares the node that second pass
    over every uploaded blob at commit.
    """

    def __init__(self, client: ContainerdClient, ref: str) -> None:
        """Not open yet: see :meth:`ContainerdClient.open_ingest`."""
        self.ref, self.offset = ref, 0
        self._client = client
        self._call: Any = None
        self._unanswered = 0  # writes sent whose response was not read yet

    async def open(self) -> None:
        """Start the stream and learn the ingest's offset on the node."""
        self._call = self._client._content.Write(metadata=self._client._md())
        try:
            async with self._errors("opening"), asyncio.timeout(self._client.timeout):
                await self._call.write(content_pb2.WriteContentRequest(action=content_pb2.STAT, ref=self.ref))
                status = await self._call.read()
                if status is grpc.aio.EOF:
                    raise PushFailed(f"containerd ended the upload {self.ref} at once")
                self.offset = int(status.offset)
        except BaseException:
            self.close()  # never leave a half-open stream holding the ingest
            raise

    async def append(self, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` at the current offset; the new offset once the node has taken them."""
        req = content_pb2.WriteContentRequest
        async with self._errors("receiving"):
            async for data in chunks:  # waiting for the client's bytes is not containerd's time
                async with asyncio.timeout(self._client.timeout):
                    for start in range(0, len(data), WRITE_CHUNK):
                        piece = data[start : start + WRITE_CHUNK]
                        await self._call.write(
                            req(action=content_pb2.WRITE, ref=self.ref, offset=self.offset, data=piece)
                        )
                        self.offset += len(piece)
                        self._unanswered += 1
                        while self._unanswered > _UNANSWERED_WRITES:  # responses must be read
                            await self._answer()
            async with asyncio.timeout(self._client.timeout):
                while self._unanswered:
                    await self._answer()
        return self.offset

    async def commit(self, digest: str, labels: Mapping[str, str]) -> bool:
        """Commit what was written as ``digest``; True when the blob was there already.

        Raises:
            BlobMismatch: when what was written is not ``digest``.
        """
        req = content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT,
            ref=self.ref,
            offset=self.offset,
            total=self.offset,
            expected=digest,
            labels=dict(labels),
        )
        try:
            async with asyncio.timeout(self._client.timeout):
                await self._call.write(req)
                await self._call.done_writing()
                await _drain(self._call)
        except (grpc.aio.AioRpcError, CoreError) as failed:
            err = failed if isinstance(failed, grpc.aio.AioRpcError) else await _status_of(self._call)
            if _code(err) != grpc.StatusCode.ALREADY_EXISTS:
                if _code(err) in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
                    raise BlobMismatch(f"the upload is not {digest} ({err.details()})") from err
                _raise_push_error(f"committing {digest}", err)
        except TimeoutError:
            raise ContainerdTimeout(f"containerd did not commit {digest} in time") from None
        else:
            return False
        finally:
            self.close()
        # Committed by another writer meanwhile: a commit that finds the blob does not lease it.
        if self._client.lease:
            await self._client.protect([digest])
        return True

    def close(self) -> None:
        """End the stream (what the node took stays in the ingest, for a resume or an abort)."""
        if self._call is not None:
            self._call.cancel()

    async def _answer(self) -> None:
        if await self._call.read() is grpc.aio.EOF:
            raise PushFailed(f"containerd ended the upload {self.ref}")
        self._unanswered -= 1

    @asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AioRpcError as err:
            _raise_push_error(f"{what} {self.ref}", err)
        except CoreError:
            _raise_push_error(f"{what} {self.ref}", await _status_of(self._call))
        except TimeoutError:
            raise ContainerdTimeout(f"containerd stopped taking data for {self.ref}") from None


async def _drain(call: Any) -> None:
    """Read every Write response; raise the call's error if it failed.

    Responses must be consumed, or flow control would stall the upload.
    """
    while True:
        resp = await call.read()
        if resp is grpc.aio.EOF:
            return


async def _settled_error(call: Any, err: grpc.aio.AioRpcError, wait: float = 5.0) -> grpc.aio.AioRpcError:
    """The server's error for ``call`` rather than grpc's placeholder for a failed write.

    When a write races the server's final status, grpc.aio sets INTERNAL "Internal error
    from Core" and overwrites it once the real status (e.g. "no space left on device")
    arrives; wait for that, briefly.
    """
    deadline = asyncio.get_running_loop().time() + wait
    while err.details() == _CORE_PLACEHOLDER and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
        if await call.details() != _CORE_PLACEHOLDER:
            return grpc.aio.AioRpcError(
                await call.code(),
                await call.initial_metadata(),
                await call.trailing_metadata(),
                await call.details(),
                await call.debug_error_string(),
            )
    return err


def _to_pb(desc: Descriptor) -> types_pb.Descriptor:
    return types_pb.Descriptor(
        media_type=desc.media_type, digest=desc.digest, size=desc.size, annotations=dict(desc.annotations)
    )
