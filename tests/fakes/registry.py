"""A small registry speaking the pull side of the OCI distribution spec, for unit tests of
what a real registry (tests/integration) cannot show: Bearer tokens and their expiry,
identity tokens, redirects to blob storage, servers that ignore Range, rate limits, TLS.

What it does, and no more:

* ``GET /v2/``, ``/v2/NAME/manifests/REF`` (tag or digest) and ``/v2/NAME/blobs/DIGEST``,
  with ``Range: bytes=N-`` (unless :attr:`FakeRegistry.ignore_range`);
* ``auth="basic"``: users and passwords; ``auth="bearer"``: a token service at ``/token``
  (GET with Basic or anonymous, POST with an OAuth2 refresh token), tokens valid for one
  repository until :meth:`FakeRegistry.expire_tokens`; :attr:`FakeRegistry.private`
  repositories refuse anonymous tokens;
* blobs redirected (:attr:`FakeRegistry.redirect_blobs`) to ``/storage/DIGEST`` on
  ``localhost`` instead of ``127.0.0.1``: another host, as blob storage is;
* HTTPS with a throwaway CA (``tls=True``);
* every request recorded.

Usage::

    with FakeRegistry(auth="bearer", users={"bob": "pw"}) as registry:
        registry.push_layout("team/app", write_layout(tmp_path / "img"), "v1")
        open_registry(f"{registry.host}/team/app:v1")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
import tempfile
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tests.fakes.kube_api import CertificateAuthority
from tests.helpers.oci import LayoutInfo

T = TypeVar("T")
SERVICE = "fake-registry"
_OCTETS = "application/octet-stream"


@dataclass(frozen=True)
class RecordedRequest:
    """What reached the server."""

    method: str
    host: str
    path: str
    authorization: str
    range: str


@dataclass
class Repository:
    """Manifests by tag and digest (media type, bytes), blobs by digest."""

    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


class FakeRegistry:
    """The fake registry; see the module's docstring."""

    def __init__(
        self, *, auth: str | None = None, users: Mapping[str, str] | None = None, tls: bool = False
    ) -> None:
        self.auth = auth
        self.users = dict(users or {})
        self.repositories: dict[str, Repository] = {}
        self.requests: list[RecordedRequest] = []
        self.private: set[str] = set()
        self.identity_tokens: dict[str, str] = {}  # refresh token -> user
        self.redirect_blobs = False
        self.ignore_range = False
        self.rate_limited = False
        self.ca = CertificateAuthority() if tls else None
        self.port = 0
        self._tokens: dict[str, tuple[str | None, str]] = {}  # token -> (user, repository)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_get("/v2/", self._base)
        self.app.router.add_get("/v2/{name:.+}/manifests/{ref}", self._manifest)
        self.app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        self.app.router.add_get("/storage/{digest}", self._storage)
        self.app.router.add_get("/token", self._token_get)
        self.app.router.add_post("/token", self._token_post)

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "https" if self.ca else "http"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as in image names."""
        return f"127.0.0.1:{self.port}"

    # -- content -------------------------------------------------------------------------

    def push_layout(self, name: str, info: LayoutInfo, tag: str) -> None:
        """Store every blob of a layout in repository ``name``; ``tag`` names its root."""
        repo = self.repositories.setdefault(name, Repository())
        kinds = self._document_kinds(info)
        for digest, data in info.blobs.items():
            if digest in kinds:
                repo.manifests[digest] = (kinds[digest], data)
            else:
                repo.blobs[digest] = data
        repo.manifests[tag] = repo.manifests[info.root.digest]

    @staticmethod
    def _document_kinds(info: LayoutInfo) -> dict[str, str]:
        kinds = {image.manifest.digest: image.manifest.media_type for image in info.images}
        if info.index is not None:
            kinds[info.index.digest] = info.index.media_type
        return kinds

    def expire_tokens(self) -> None:
        """Forget every token issued so far (as if they had expired)."""
        self._tokens.clear()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeRegistry:
        """Serve on a random port of 127.0.0.1 from a background thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-registry", daemon=True)
        self._thread.start()
        self.port = self._run(self._serve())
        return self

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            self._run(self._shutdown(self._runner))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _serve(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context())
        await site.start()
        return int(self._runner.addresses[0][1])

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        for connection in list(runner.server.connections if runner.server else ()):
            if connection.transport is not None:
                connection.transport.abort()
        await runner.cleanup()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.ca.issue("fake-registry", server=True)
        with tempfile.TemporaryDirectory(prefix="fake-registry-") as tmp:
            (Path(tmp) / "tls.crt").write_bytes(cert)
            (Path(tmp) / "tls.key").write_bytes(key)
            context.load_cert_chain(Path(tmp) / "tls.crt", Path(tmp) / "tls.key")
        return context

    # -- authentication --------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        headers = request.headers
        self.requests.append(
            RecordedRequest(
                request.method,
                headers.get("Host", ""),
                request.path,
                headers.get("Authorization", ""),
                headers.get("Range", ""),
            )
        )
        if self.rate_limited and request.path.startswith("/v2/"):
            return _error(
                429, "TOOMANYREQUESTS", "you have reached your pull rate limit", {"Retry-After": "30"}
            )
        response: web.StreamResponse = await handler(request)
        return response

    def _basic_user(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user if self.users.get(user) == password else None

    def _denied(self, name: str | None) -> web.Response:
        if self.auth == "basic":
            challenge = 'Basic realm="fake"'
        else:
            challenge = f'Bearer realm="{self.scheme}://{self.host}/token",service="{SERVICE}"'
            if name:
                challenge += f',scope="repository:{name}:pull"'
        return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})

    def _allowed(self, request: web.Request, name: str | None) -> bool:
        if self.auth is None:
            return True
        if self.auth == "basic":
            return self._basic_user(request) is not None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        granted = self._tokens.get(token) if scheme == "Bearer" else None
        return granted is not None and (name is None or granted[1] == name)

    async def _token_get(self, request: web.Request) -> web.Response:
        user = self._basic_user(request)
        if request.headers.get("Authorization") and user is None:
            return _error(401, "UNAUTHORIZED", "incorrect username or password")
        return self._issue(user, request.query.get("scope", ""), request.query.get("service", ""))

    async def _token_post(self, request: web.Request) -> web.Response:
        form = await request.post()
        user = self.identity_tokens.get(str(form.get("refresh_token", "")))
        if form.get("grant_type") != "refresh_token" or user is None:
            return _error(401, "UNAUTHORIZED", "invalid refresh token")
        return self._issue(user, str(form.get("scope", "")), str(form.get("service", "")))

    def _issue(self, user: str | None, scope: str, service: str) -> web.Response:
        if service != SERVICE:
            return _error(400, "DENIED", f"unknown service {service!r}")
        name = scope.removeprefix("repository:").rsplit(":", 1)[0]
        if name in self.private and user is None:
            return web.json_response({"token": ""}, status=401)
        token = secrets.token_hex(16)
        self._tokens[token] = (user, name)
        return web.json_response({"access_token": token, "expires_in": 300})

    # -- content -------------------------------------------------------------------------

    async def _base(self, request: web.Request) -> web.Response:
        return web.json_response({}) if self._allowed(request, None) else self._denied(None)

    async def _manifest(self, request: web.Request) -> web.Response:
        name, ref = request.match_info["name"], request.match_info["ref"]
        if not self._allowed(request, name):
            return self._denied(name)
        found = self.repositories.get(name, Repository()).manifests.get(ref)
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, data = found
        if not any(t.strip() == media_type for t in request.headers.get("Accept", "").split(",")):
            return _error(404, "MANIFEST_UNKNOWN", "no manifest of an accepted media type")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return web.Response(body=data, headers={"Content-Type": media_type, "Docker-Content-Digest": digest})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        name, digest = request.match_info["name"], request.match_info["digest"]
        if not self._allowed(request, name):
            return self._denied(name)
        if digest not in self.repositories.get(name, Repository()).blobs:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if self.redirect_blobs:
            raise web.HTTPTemporaryRedirect(f"{self.scheme}://localhost:{self.port}/storage/{digest}")
        return self._ranged(request, self.repositories[name].blobs[digest])

    async def _storage(self, request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        for repo in self.repositories.values():
            if digest in repo.blobs:
                return self._ranged(request, repo.blobs[digest])
        return web.Response(status=404)

    def _ranged(self, request: web.Request, data: bytes) -> web.Response:
        wanted = request.headers.get("Range", "")
        if self.ignore_range or not wanted.startswith("bytes="):
            return web.Response(body=data, content_type=_OCTETS)
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        if start >= len(data):
            return web.Response(status=416)
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return web.Response(
            body=data[start:], status=206, headers=headers, content_type="application/octet-stream"
        )
