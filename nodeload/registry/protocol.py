"""The OCI distribution API (``/v2/``) on aiohttp, over a :class:`BlobStore`: the nodes' content
stores for ``nodeload serve`` (:mod:`.store`), a private local spool for the Docker engine's own
push (:mod:`.spool`).

Only the protocol lives here: routes, headers, status codes, credentials, OCI error bodies.
Pulls (blob and manifest GET/HEAD), pushes (monolithic and chunked uploads with resumable
offsets, cross-repository mounts, manifests and indexes by tag and digest, ``OCI-Subject`` for a
manifest with a subject), tag lists (paginated) and the referrers API (filtered by artifact
type). Deleting is not offered (405): the nodes' images are managed with ctr/crictl. A request body that
stalls is cut (see :class:`~nodeload.registry.limits.Limits`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import re
import secrets
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from aiohttp import StreamReader, web

from nodeload.errors import UsageError
from nodeload.image import MEDIA_OCI_INDEX, sha256_digest
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, parse
from nodeload.registry.errors import RegistryError, invalid, manifest_unknown
from nodeload.registry.limits import Limits
from nodeload.registry.manifests import referrers_index, subject_of, tags_page
from nodeload.wording import setting

_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
# A registry host at the front (ghcr.io/me/app) is part of the repository path here.
_REPOSITORY = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_NAME}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Upload bytes are handed on in pieces of at least this much: a client compressing as it sends
# (docker push) delivers a few KiB at a time, and each piece costs a gRPC message and a write
# on every node (per-piece costs, not bytes, then set the pace).
_CHUNK = 1 << 20
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PendingUpload(Protocol):
    """A blob upload in progress, as the protocol reports it."""

    @property
    def uuid(self) -> str: ...

    @property
    def offset(self) -> int: ...


U = TypeVar("U", bound=PendingUpload)


class BlobStore(Protocol[U]):
    """Where a registry keeps what clients push, and finds what they ask for.

    Each method raises :class:`~nodeload.registry.errors.RegistryError` with the spec's code for
    what the client got wrong (an unknown blob or upload, a digest that does not match...).
    """

    limits: Limits

    async def blob_size(self, digest: str) -> int:
        """The size of a blob the registry has (BLOB_UNKNOWN otherwise)."""
        ...

    async def read_blob(self, digest: str) -> tuple[int, AsyncIterator[bytes]]:
        """A blob's size and bytes."""
        ...

    async def mount(self, digest: str) -> bool:
        """Cross-repository mount: whether the blob is there already."""
        ...

    async def start_upload(self) -> U:
        """A new upload."""
        ...

    def upload(self, uuid: str) -> U:
        """The upload ``uuid`` (BLOB_UPLOAD_UNKNOWN otherwise)."""
        ...

    async def append(self, upload: U, chunks: AsyncIterable[bytes]) -> None:
        """Add a request body to the upload."""
        ...

    async def finish(self, upload: U, digest: str) -> None:
        """Commit the upload as ``digest`` (DIGEST_INVALID when the bytes are not that)."""
        ...

    async def cancel(self, upload: U) -> None:
        """Throw the upload away."""
        ...

    async def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest or index; its digest."""
        ...

    async def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes]:
        """A manifest's media type and bytes, by tag or digest (MANIFEST_UNKNOWN otherwise)."""
        ...

    async def tags(self, repository: str) -> list[str]:
        """The repository's tags."""
        ...

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests whose subject is ``digest``."""
        ...


Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Credentials:
    """The per-run login that every request must present (HTTP Basic)."""

    username: str
    password: str

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh credentials for one run."""
        return cls("nodeload", secrets.token_urlsafe(24))

    @property
    def basic(self) -> str:
        """base64(user:password), as Docker's config.json and skopeo's auth.json store it."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def accepts(self, header: str | None) -> bool:
        """Whether an Authorization header carries these credentials."""
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "basic" and secrets.compare_digest(
            value.strip().encode(), self.basic.encode()
        )


def build_app(store: BlobStore[Any], credentials: Credentials) -> web.Application:
    """The registry application."""
    middlewares: list[Any] = [_errors, _authenticated(credentials), _checked_names]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_DOCUMENT_BYTES)
    repo = "/v2/{name:.+}"
    routes = [
        web.get("/v2/", _version),
        web.get(repo + "/blobs/{digest:[^/]+}", _blob(store)),  # and HEAD
        web.post(repo + "/blobs/uploads/", _start_upload(store)),
        web.patch(repo + "/blobs/uploads/{uuid:[^/]+}", _patch_upload(store)),
        web.put(repo + "/blobs/uploads/{uuid:[^/]+}", _put_upload(store)),
        web.get(repo + "/blobs/uploads/{uuid:[^/]+}", _upload_status(store)),
        web.delete(repo + "/blobs/uploads/{uuid:[^/]+}", _cancel_upload(store)),
        web.get(repo + "/manifests/{ref:[^/]+}", _manifest(store)),  # and HEAD
        web.put(repo + "/manifests/{ref:[^/]+}", _put_manifest(store)),
        web.get(repo + "/tags/list", _tags(store)),
        web.get(repo + "/referrers/{digest:[^/]+}", _referrers(store)),
    ]
    app.add_routes(routes)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as err:
        response = err.response()
        response.headers.update(API_VERSION)
        return response
    except web.HTTPException as err:
        if err.status == 404:
            return RegistryError(404, "NAME_UNKNOWN", f"no such route: {request.path}").response()
        if err.status == 405:
            return RegistryError(405, "UNSUPPORTED", f"{request.method} is not supported here").response()
        raise


@web.middleware
async def _checked_names(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Names, digests and tags as the distribution spec allows them, or its error codes."""
    info = request.match_info
    if "name" in info and not _REPOSITORY.fullmatch(info["name"]):
        raise invalid("NAME_INVALID", f"invalid repository name {info['name']!r}")
    if "digest" in info:
        _checked_digest(info["digest"])
    ref = info.get("ref")
    if ref is not None and not (_DIGEST.fullmatch(ref) or _TAG.fullmatch(ref)):
        if request.method in ("GET", "HEAD"):  # the spec's table: no such manifest, not a bad request
            raise manifest_unknown(ref)
        raise invalid("TAG_INVALID", f"invalid tag or digest {ref!r}")
    return await handler(request)


def _authenticated(
    credentials: Credentials,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not credentials.accepts(request.headers.get("Authorization")):
            refused = RegistryError(401, "UNAUTHORIZED", "authentication required").response()
            refused.headers["WWW-Authenticate"] = 'Basic realm="nodeload"'
            refused.headers.update(API_VERSION)
            return refused
        response = await handler(request)
        response.headers.update(API_VERSION)
        return response

    return check


async def _version(request: web.Request) -> web.Response:
    return web.json_response({})


def _blob(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if request.method == "HEAD":  # answered by the nodes: present only if every node has it
            size = await store.blob_size(digest)
            return web.Response(headers={"Content-Length": str(size), "Docker-Content-Digest": digest})
        size, chunks = await store.read_blob(digest)
        response = web.StreamResponse(headers={"Docker-Content-Digest": digest})
        response.content_type = "application/octet-stream"
        response.content_length = size
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    return handle


def _upload_headers(name: str, upload: PendingUpload) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload.uuid}",
        "Range": f"0-{max(upload.offset - 1, 0)}",
        "Docker-Upload-UUID": upload.uuid,
    }


def _created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}
    )


def _start_upload(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        mount = request.query.get("mount")
        if mount and _DIGEST.fullmatch(mount) and await store.mount(mount):
            return _created(name, mount)
        upload = await store.start_upload()
        digest = request.query.get("digest")
        if digest is not None:  # monolithic: the whole blob in this request
            try:
                await store.append(upload, _body(request, store.limits))
            except Exception:  # stalled, or the client went away: it has no location to resume at
                await store.cancel(upload)
                raise
            await store.finish(upload, _checked_digest(digest))
            return _created(name, digest)
        return web.Response(status=202, headers=_upload_headers(name, upload))

    return handle


def _patch_upload(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name, upload = request.match_info["name"], store.upload(request.match_info["uuid"])
        content_range = request.headers.get("Content-Range")
        if content_range:
            start = content_range.partition("-")[0]
            if not start.isdigit() or int(start) != upload.offset:
                response = RegistryError(
                    416, "BLOB_UPLOAD_INVALID", f"the upload is at {upload.offset}"
                ).response()
                response.headers.update(_upload_headers(name, upload))
                return response
        await _append(store, upload, request)
        return web.Response(status=202, headers=_upload_headers(name, upload))

    return handle


def _put_upload(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name, upload = request.match_info["name"], store.upload(request.match_info["uuid"])
        digest = _checked_digest(request.query.get("digest", ""))
        if request.content_length or request.body_exists:
            await _append(store, upload, request)
        await store.finish(upload, digest)
        return _created(name, digest)

    return handle


def _upload_status(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        upload = store.upload(request.match_info["uuid"])
        return web.Response(status=204, headers=_upload_headers(request.match_info["name"], upload))

    return handle


def _cancel_upload(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        await store.cancel(store.upload(request.match_info["uuid"]))
        return web.Response(status=204)

    return handle


def _manifest(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        media_type, data = await store.get_manifest(request.match_info["name"], request.match_info["ref"])
        digest = sha256_digest(data)
        headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        return web.Response(body=data, headers=headers)

    return handle


def _put_manifest(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["ref"]
        data = await _document(request, store.limits)
        media_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        digest = await store.put_manifest(name, reference, media_type, data)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        subject = subject_of(parse(data, digest))  # the store has read the document already
        if subject:  # the client need not fall back to the referrers tag schema
            headers["OCI-Subject"] = subject
        return web.Response(status=201, headers=headers)

    return handle


def _tags(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        n, last = request.query.get("n"), request.query.get("last")
        if n is not None and not n.isdigit():
            raise invalid("PAGINATION_NUMBER_INVALID", f"n must be a number, not {n!r}")
        tags = await store.tags(name)
        if not tags:
            raise RegistryError(404, "NAME_UNKNOWN", f"no tag of {name} is on every node")
        page, more = tags_page(tags, None if n is None else int(n), last)
        headers = {}
        if more and page:
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={quote(page[-1])}>; rel="next"'
        return web.json_response({"name": name, "tags": page}, headers=headers)

    return handle


def _referrers(store: BlobStore[Any]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        found = await store.referrers(request.match_info["digest"])
        headers = {}
        wanted = request.query.get("artifactType")
        if wanted is not None:
            found = [desc for desc in found if desc.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        headers["Content-Type"] = MEDIA_OCI_INDEX  # exactly, no charset: clients compare it
        return web.Response(body=json.dumps(referrers_index(found)).encode(), headers=headers)

    return handle


def _checked_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise invalid("DIGEST_INVALID", f"unsupported or malformed digest {digest!r} (sha256 only)")
    return digest


class _Stalled(RegistryError):
    """A request body that brought too little for too long: cut (408), the connection closed."""

    def __init__(self, limits: Limits, code: str) -> None:
        super().__init__(
            408,
            code,
            f"the request body brought less than {limits.stall_bytes} bytes in {limits.stall_seconds:g} s",
            close=True,
        )


async def _append(store: BlobStore[Any], upload: PendingUpload, request: web.Request) -> None:
    """Add the request body to an upload; cut for stalling, it keeps what arrived and can be resumed."""
    try:
        await store.append(upload, _body(request, store.limits))
    except _Stalled as err:
        err.headers.update(_upload_headers(request.match_info["name"], upload))
        err.message += f"; the upload is kept at {upload.offset} bytes (Range), resume it there"
        raise


async def _body(request: web.Request, limits: Limits) -> AsyncIterator[bytes]:
    """The request body in pieces of ``_CHUNK`` bytes (the last one shorter); see :func:`paced`."""
    async for piece in pieces(paced(request.content, limits, "BLOB_UPLOAD_INVALID"), _CHUNK):
        yield piece


async def _document(request: web.Request, limits: Limits) -> bytes:
    """A small request body (a manifest) whole, as :func:`paced` and no larger than a document may be."""
    data = bytearray()
    async for chunk in paced(request.content, limits, "MANIFEST_INVALID"):
        data += chunk
        if len(data) > MAX_DOCUMENT_BYTES:
            too_large = f"the manifest is larger than {MAX_DOCUMENT_BYTES >> 20} MiB"
            raise RegistryError(400, "MANIFEST_INVALID", too_large, close=True)
    return bytes(data)


async def paced(stream: StreamReader, limits: Limits, code: str) -> AsyncIterator[bytes]:
    """What arrives on ``stream``, as long as every ``limits.stall_bytes`` take at most
    ``limits.stall_seconds`` of waiting for the client.

    Only the time spent waiting for the client counts: while the caller is busy with what it
    was given (slow nodes), the client is not to blame.

    Raises:
        RegistryError: 408 with ``code``, closing the connection, when the client stalls.
    """
    budget, owed = limits.stall_seconds, limits.stall_bytes
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            async with asyncio.timeout(budget):
                data = await stream.readany()
        except TimeoutError:
            raise _Stalled(limits, code) from None
        if not data:
            return
        budget -= loop.time() - started
        owed -= len(data)
        if owed <= 0:
            budget, owed = limits.stall_seconds, limits.stall_bytes
        yield data


async def pieces(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """``chunks`` joined into pieces of at least ``size`` bytes (the last one may be shorter)."""
    pending: list[bytes] = []
    held = 0
    async for data in chunks:
        pending.append(data)
        held += len(data)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def loopback(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on, which must be a loopback address.

    Raises:
        UsageError: for anything else (the endpoint writes into nodes: never expose it).
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
        number = int(port)
    except ValueError:
        raise UsageError(f"{setting('listen')} {listen!r}: expected 127.0.0.1:PORT") from None
    if not address.is_loopback or not 0 <= number < 65536:
        raise UsageError(
            f"{setting('listen')} {listen!r}: nodeload serve listens on loopback only (127.0.0.1:PORT)"
        )
    return str(address), number


async def listen(
    stack: contextlib.AsyncExitStack, app: web.Application, host: str, port: int, *, fallback: bool = False
) -> str:
    """Serve ``app`` on ``host``:``port`` until ``stack`` closes (``fallback``: any free port when
    that one is taken); the address, ``HOST:PORT``.

    Raises:
        UsageError: the port is taken (without ``fallback``).
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(_stop, runner)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        if not (fallback and port):
            sock.close()
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
        sock.bind((host, 0))  # the usual port is taken (another run): any port will do
    await web.SockSite(runner, sock).start()
    bound = sock.getsockname()[1]
    return f"[{host}]:{bound}" if family == socket.AF_INET6 else f"{host}:{bound}"


async def _stop(runner: web.AppRunner) -> None:
    """Stop serving. Connections still open are cut, not waited for: after an interruption (Ctrl-C)
    a client may be mid-upload, and the engine's docker push only stops when its upload fails."""
    for connection in list(runner.server.connections if runner.server else ()):
        if connection.transport is not None:
            connection.transport.abort()
    await runner.cleanup()
