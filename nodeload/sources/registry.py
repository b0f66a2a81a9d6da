"""Images in a registry (``docker://REF``): the client side of the OCI distribution spec.

How the registry is spoken to is settled by probing ``/v2/``:

* HTTPS with the certificate verified, by default;
* for a registry on this machine (``localhost``, ``127.0.0.0/8``, ``::1``), plain HTTP when
  HTTPS fails there, as Docker treats such registries as insecure: a test or mirror
  registry on loopback needs no flag, and nothing crosses a network in clear;
* with ``tls_verify=False`` (skopeo's ``--src-tls-verify=false``), HTTPS without
  verifying the certificate, then plain HTTP, for any registry.

Logging in answers the registry's ``WWW-Authenticate`` challenge: Basic with the user's
credentials (see :mod:`~nodeload.sources.registry_auth`), or a Bearer token from the realm
the challenge names, anonymous when there are no credentials (an identity token is
exchanged as an OAuth2 refresh token). A token that expires during a long push is renewed
on the next 401.

Manifests and indexes come from ``/manifests/`` by tag or digest, at most
``MAX_DOCUMENT_BYTES``, checked against their digest and kept in memory. Every other blob
is streamed from ``/blobs/``, from an offset with ``Range: bytes=N-``, following redirects
to blob storage (another host, which is not sent the registry's ``Authorization``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import urllib3

from nodeload import __version__
from nodeload.errors import ImageNotFound, RegistryAuthFailed, SourceError
from nodeload.image import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Descriptor,
    check_digest,
    sha256_digest,
)
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, parse, parse_any
from nodeload.reference import Reference, parse_reference
from nodeload.sources.base import Closeable
from nodeload.sources.registry_auth import (
    DOCKER_HUB,
    Challenge,
    CredentialLookup,
    Credentials,
    find_credentials,
    parse_challenge,
)
from nodeload.sources.streams import CHUNK, read_full
from nodeload.text import printable
from nodeload.wording import setting

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DOCKER_HUB_HOST = "registry-1.docker.io"
CONNECT_TIMEOUT = 15.0
# Between two bytes of an answer, not for the whole answer: big blobs take long.
READ_TIMEOUT = 60.0
MANIFEST_ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST))
_SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_MAX_SMALL_ANSWER = 1 << 20  # error bodies and tokens
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name[:port]``, ``[v6]:port``) is this machine."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """A repository of a registry, named as in image names (``docker.io``, ``library/alpine``)."""

    registry: str
    repository: str

    @property
    def host(self) -> str:
        """Where the registry's API is (Docker Hub's is not at docker.io)."""
        return DOCKER_HUB_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository``, for messages."""
        return f"{self.registry}/{self.repository}"

    @property
    def login_command(self) -> str:
        """How the user logs in to this registry."""
        return "docker login" if self.registry == DOCKER_HUB else f"docker login {self.registry}"


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _session() -> requests.Session:
    session = requests.Session()
    # An explicit auth keeps requests from adding ~/.netrc's, which would replace our header.
    session.auth = _keep_headers
    # Blobs are hashed as sent: the server must not re-encode them for the transfer.
    session.headers.update({"User-Agent": f"nodeload/{__version__}", "Accept-Encoding": "identity"})
    return session


class RegistryClient:
    """HTTP with one repository of a registry: the probe, logging in, GETs and their errors.

    Safe to use from several threads; each GET has a response of its own.
    """

    def __init__(self, endpoint: Endpoint, *, tls_verify: bool = True) -> None:
        """Prepare to talk to ``endpoint``; nothing is sent before :meth:`connect`."""
        self.endpoint = endpoint
        self._verify = tls_verify
        insecure = not tls_verify or is_loopback(endpoint.host)
        self._bases = [f"https://{endpoint.host}"] + ([f"http://{endpoint.host}"] if insecure else [])
        self._base = self._bases[0]
        self._session = _session()
        self._authorization = ""
        self._lookup: CredentialLookup | None = None
        self._lock = threading.Lock()
        if not tls_verify:  # asked for: a warning per request would only be noise
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        """Close the connections."""
        self._session.close()

    # -- probe and login ----------------------------------------------------------

    def connect(self) -> None:
        """Probe ``/v2/`` to choose HTTPS or HTTP, and log in if the registry asks.

        Raises:
            SourceError: when no registry answers (RegistryAuthFailed when it refuses a login).
        """
        with self._probe() as response:
            status = response.status_code
            if status == 401:
                self._login(response)
            elif status == 404:  # the spec's answer of a server without the v2 API
                raise SourceError(
                    f"{response.url} answered HTTP 404: is {self.endpoint.registry} a registry?"
                )
            else:
                self.check(response, "the API root /v2/")

    def _probe(self) -> requests.Response:
        tls: requests.exceptions.SSLError | None = None
        first: requests.RequestException | None = None
        for base in self._bases:
            try:
                response = self._request("GET", f"{base}/v2/")
            except requests.RequestException as exc:
                if isinstance(exc, requests.exceptions.SSLError):
                    tls = tls or exc
                first = first or exc
                continue
            if tls is not None and response.status_code == 400:  # HTTPS spoken there, not HTTP
                response.close()
                continue
            self._base = base
            return response
        if tls is not None:  # the registry is there; its certificate is the problem
            raise _network_error(tls, f"https://{self.endpoint.host}")
        assert first is not None
        raise _network_error(first, " and ".join(f"{base}/v2/" for base in self._bases))

    def _credentials(self) -> CredentialLookup:
        if self._lookup is None:
            self._lookup = find_credentials(self.endpoint.registry, self.endpoint.repository)
        return self._lookup

    def _login(self, response: requests.Response) -> None:
        header = response.headers.get("WWW-Authenticate", "")
        challenge = parse_challenge(header)
        if challenge is not None and challenge.scheme == "basic":
            self._authorization = self._basic()
        elif challenge is not None and challenge.scheme == "bearer":
            self._authorization = "Bearer " + self._token(challenge)
        else:
            raise RegistryAuthFailed(
                f"{self.endpoint.registry} asks for a login nodeload cannot do "
                f"(WWW-Authenticate: {printable(header[:200])!r})"
            )

    def _basic(self) -> str:
        lookup = self._credentials()
        found = lookup.credentials
        if found is None or not found.username:
            raise RegistryAuthFailed(
                f"{self.endpoint.registry} needs a user name and password, and nodeload has "
                f"{lookup.describe()}; log in with `{self.endpoint.login_command}`"
            )
        return _basic_header(found)

    def _token(self, challenge: Challenge) -> str:
        """A Bearer token from the challenge's realm, for pulling from our repository."""
        realm = challenge.params.get("realm", "")
        found = self._credentials().credentials
        self._check_realm(realm, found)
        query = {"scope": challenge.params.get("scope") or f"repository:{self.endpoint.repository}:pull"}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        try:
            if found is not None and found.identity_token:
                form = {**query, "grant_type": "refresh_token", "client_id": "nodeload"}
                response = self._request("POST", realm, data={**form, "refresh_token": found.identity_token})
            else:
                basic = {"Authorization": _basic_header(found)} if found and found.username else {}
                response = self._request("GET", realm, params=query, headers=basic)
        except requests.RequestException as exc:
            raise _network_error(exc, realm) from None
        with response:
            return self._read_token(response, realm)

    def _check_realm(self, realm: str, found: Credentials | None) -> None:
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise SourceError(f"{self.endpoint.registry} names a token service that is no URL: {realm!r}")
        if found and parts.scheme == "http" and self._verify and not is_loopback(parts.netloc):
            raise SourceError(
                f"{self.endpoint.registry} asks for credentials to be sent to {realm} in clear text; "
                f"nodeload refuses (use {setting('no_tls_verify')} to allow it)"
            )

    def _read_token(self, response: requests.Response, realm: str) -> str:
        if response.status_code in (401, 403):
            raise RegistryAuthFailed(
                f"the token service {realm} of {self.endpoint.registry} refused "
                f"{self._credentials().describe()}{_said(response)}; "
                f"log in again with `{self.endpoint.login_command}`"
            )
        if response.status_code != 200:
            status = response.status_code
            raise SourceError(f"the token service {realm} answered HTTP {status}{_said(response)}")
        doc = parse(_read_at_most(response, _MAX_SMALL_ANSWER, realm), f"the answer of {realm}")
        token = doc.text("token") or doc.text("access_token")
        if not token:
            raise SourceError(f"the token service {realm} answered without a token")
        return token

    # -- requests -----------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One streamed request, with the timeouts and TLS setting of every request."""
        return self._session.request(
            method,
            url,
            headers=headers,
            params=params,
            data=data,
            stream=True,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            verify=self._verify,
        )

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> requests.Response:
        """GET ``/v2/<repository>/<path>``, logging in again once if the registry asks.

        The response is streamed: close it (``with response:``).

        Raises:
            SourceError: when the registry cannot be reached.
        """
        url = f"{self._base}/v2/{self.endpoint.repository}/{path}"
        sent_with = self._authorization
        response = self._send(url, headers)
        if response.status_code != 401:
            return response
        with response, self._lock:
            if self._authorization == sent_with:  # nobody logged in again meanwhile
                self._login(response)
        return self._send(url, headers)

    def _send(self, url: str, headers: Mapping[str, str] | None) -> requests.Response:
        auth = {"Authorization": self._authorization} if self._authorization else {}
        try:
            return self._request("GET", url, headers={**(headers or {}), **auth})
        except requests.RequestException as exc:
            raise _network_error(exc, url) from None

    def check(self, response: requests.Response, what: str, *, image: bool = False) -> None:
        """Raise the error a failed answer means for ``what`` (``tag 'v1'``, ``blob sha256:...``).

        Raises:
            ImageNotFound: for an unknown ``image`` (a manifest asked for by the user).
            RegistryAuthFailed: when access is denied.
            SourceError: for anything else that is not a success.
        """
        status = response.status_code
        if status in (200, 206):
            return
        said = _said(response)
        if status in (401, 403):
            raise RegistryAuthFailed(self._denied(status, said))
        if status == 404:
            error = ImageNotFound if image else SourceError
            raise error(f"{self.endpoint.name}: {what} not found{said}")
        if status == 429:
            raise SourceError(self._rate_limited(response, said))
        raise SourceError(f"{self.endpoint.registry} answered HTTP {status} for {what}{said}")

    def _denied(self, status: int, said: str) -> str:
        return (
            f"{self.endpoint.name}: pull access denied (HTTP {status}{said}). The repository does "
            f"not exist, or needs other credentials: nodeload used {self._credentials().describe()}. "
            f"Log in with `{self.endpoint.login_command}` (or skopeo login)"
        )

    def _rate_limited(self, response: requests.Response, said: str) -> str:
        after = response.headers.get("Retry-After", "")
        when = f"after {printable(after[:40])} s" if after.isdigit() else "later"
        hub = self.endpoint.registry == DOCKER_HUB
        hint = "; Docker Hub allows more pulls to users who log in" if hub else ""
        return f"{self.endpoint.registry} refuses more pulls for now (HTTP 429{said}): try again {when}{hint}"

    # -- content ------------------------------------------------------------------

    def fetch_manifest(self, ref: str, what: str, *, image: bool) -> tuple[str, bytes]:
        """A manifest or index by tag or digest: its Content-Type and its bytes (not checked).

        Raises:
            ImageNotFound: when ``image`` (the user's reference) is unknown.
            SourceError: when it cannot be fetched, or is too large for a manifest.
        """
        with self.get(f"manifests/{ref}", {"Accept": MANIFEST_ACCEPT}) as response:
            self.check(response, what, image=image)
            data = _read_at_most(response, MAX_DOCUMENT_BYTES, f"{self.endpoint.name}: {what}")
            return response.headers.get("Content-Type", ""), data

    @contextlib.contextmanager
    def open_blob(self, desc: Descriptor, offset: int = 0) -> Iterator[IO[bytes]]:
        """Stream a blob from ``offset``; a registry that ignores Range is read past the offset.

        Raises:
            SourceError: when the blob cannot be fetched (also while it is read).
        """
        digest = check_digest(desc.digest, f"{self.endpoint.name}: a descriptor")
        if offset >= desc.size:  # a Range past the end would be an error (416)
            yield io.BytesIO(b"")
            return
        with self.get(f"blobs/{digest}", {"Range": f"bytes={offset}-"} if offset else None) as response:
            self.check(response, f"blob {digest}")
            skip = self._skip(response, desc, offset)
            with io.BufferedReader(_Body(response, f"{self.endpoint.name}: blob {digest}"), CHUNK) as body:
                if skip and len(read_full(body, skip)) != skip:
                    raise SourceError(f"{self.endpoint.name}: blob {digest} ended before byte {skip}")
                yield body

    def _skip(self, response: requests.Response, desc: Descriptor, offset: int) -> int:
        """How many bytes of the answer come before ``offset``."""
        where = f"{self.endpoint.name}: blob {desc.digest}"
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise SourceError(f"{where}: the registry sent another range than bytes {offset}-")
            return 0
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) != desc.size:
            raise SourceError(f"{where}: the registry sends {length} bytes for a blob of {desc.size}")
        return offset


def _basic_header(found: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{found.username}:{found.password}".encode()).decode()


class _Body(io.RawIOBase):
    """A streamed answer's bytes as they came (never decoded); read failures as SourceError."""

    def __init__(self, response: requests.Response, where: str) -> None:
        super().__init__()
        self._raw: urllib3.BaseHTTPResponse = response.raw
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return self._raw.readinto(buffer)  # type: ignore[arg-type]
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise SourceError(f"{self._where}: reading from the registry failed ({_reason(exc)})") from None


def _read_at_most(response: requests.Response, limit: int, where: str) -> bytes:
    with io.BufferedReader(_Body(response, where), CHUNK) as body:
        data = read_full(body, limit + 1)
    if len(data) > limit:
        raise SourceError(f"{where}: the answer is larger than {limit} bytes")
    return data


def _said(response: requests.Response) -> str:
    """``: the registry says: ...`` from a distribution-spec error body, or ""."""
    try:
        body = parse_any(_read_at_most(response, _MAX_SMALL_ANSWER, "error"), "an error answer")
    except SourceError:
        return ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    texts = [str(e.get("message") or e.get("code") or "") for e in errors if isinstance(e, dict)]
    joined = "; ".join(t for t in texts if t)
    return f": the registry says {printable(joined[:300])!r}" if joined else ""


def _reason(exc: BaseException) -> str:
    """The useful part of a requests/urllib3 error (``Connection refused``), not the pool's prose."""
    inner: object = exc
    while isinstance(inner, BaseException):
        nested = getattr(inner, "reason", None) or (inner.args[0] if inner.args else None)
        if not isinstance(nested, BaseException):
            break
        inner = nested
    # urllib3 starts with the connection's repr: "HTTPSConnection(host='h', port=443): ...".
    text = re.sub(r"^(?:<[^>]*>|\w+Connection\([^)]*\)):\s*", "", str(inner))
    return printable(text) or type(inner).__name__


def _network_error(exc: requests.RequestException, where: str) -> SourceError:
    reason = _reason(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return SourceError(
            f"TLS with {where} failed ({reason}). If the registry's certificate comes from a CA of "
            f"your own, add it to the system's trust store or point REQUESTS_CA_BUNDLE at it; "
            f"{setting('no_tls_verify')} skips the check"
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return SourceError(f"the registry at {where} stopped answering (nothing for {READ_TIMEOUT:.0f} s)")
    if isinstance(exc, requests.exceptions.ConnectionError):  # ConnectTimeout included
        return SourceError(
            f"cannot reach the registry at {where} ({reason}); check the address, the network, "
            "and proxy settings (HTTPS_PROXY, NO_PROXY)"
        )
    return SourceError(f"talking to the registry at {where} failed: {reason}")


def _media_type(content_type: str, data: bytes, where: str) -> str:
    """What a fetched manifest is: its Content-Type, else its mediaType, else its shape."""
    declared = content_type.partition(";")[0].strip().lower()
    doc = parse(data, where)
    if declared in _SCHEMA1 or doc.raw.get("schemaVersion") == 1:
        raise SourceError(
            f"{where} is a Docker schema 1 manifest, which nodeload does not read; "
            "push the image again with a current docker or skopeo"
        )
    for kind in (declared, doc.text("mediaType")):
        if kind in INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES:
            return kind
    return MEDIA_OCI_INDEX if "manifests" in doc else MEDIA_OCI_MANIFEST


class RegistrySource(Closeable):
    """An image of a registry; not rewritable (the registry's digests must stay)."""

    def __init__(self, client: RegistryClient, reference: Reference) -> None:
        """Probe the registry and fetch the image's root manifest or index.

        Raises:
            ImageNotFound: when the registry has no such tag or digest.
            SourceError: when the registry cannot be reached or read (RegistryAuthFailed: denied).
        """
        self._client = client
        self._reference = reference.normalized()
        self._documents: dict[str, bytes] = {}  # manifests and indexes by digest
        client.connect()
        self._root = self._fetch_root(reference)

    def _fetch_root(self, reference: Reference) -> Descriptor:
        pinned = reference.digest
        tag = reference.tag or "latest"
        what = f"digest {pinned}" if pinned else f"tag {tag!r}"
        content_type, data = self._client.fetch_manifest(pinned or tag, what, image=True)
        digest = sha256_digest(data)
        if pinned and digest != pinned:
            name = self._client.endpoint.name
            raise SourceError(f"{name}: the manifest sent for {pinned} has digest {digest}")
        self._documents[digest] = data
        where = f"{self._client.endpoint.name}: {what}"
        return Descriptor(_media_type(content_type, data, where), digest, len(data))

    @property
    def reference(self) -> str:
        """The normalized image name, e.g. ``ghcr.io/me/app:1``."""
        return self._reference

    @property
    def root(self) -> Descriptor:
        """The manifest or index the reference names."""
        return self._root

    @property
    def rewritable(self) -> bool:
        """False: the manifests are the registry's, digests must stay."""
        return False

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a blob from ``offset``; manifests and indexes come from memory once fetched.

        Raises:
            SourceError: when the registry does not serve it.
        """
        data = self._documents.get(desc.digest)
        if data is None and desc.media_type in INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES:
            data = self._manifest(desc)
        if data is None:
            return self._client.open_blob(desc, offset)
        stream = io.BytesIO(data)
        stream.seek(offset)
        return contextlib.nullcontext(stream)

    def _manifest(self, desc: Descriptor) -> bytes:
        what = f"manifest {desc.digest}"
        _, data = self._client.fetch_manifest(check_digest(desc.digest, what), what, image=False)
        if sha256_digest(data) != desc.digest:
            raise SourceError(f"{self._client.endpoint.name}: {what} does not match its digest")
        self._documents[desc.digest] = data
        return data

    def refresh(self, desc: Descriptor) -> bool:
        """False: nodeload keeps no copy of a registry's blobs that could be rebuilt."""
        return False

    def close(self) -> None:
        """Close the connections to the registry."""
        self._client.close()


def open_registry(text: str, *, tls_verify: bool = True) -> RegistrySource:
    """The image ``text`` (``ghcr.io/me/app:1``, ``alpine``, ``host:5000/app@sha256:...``) names.

    Args:
        text: an image reference, normalized as Docker does (``alpine`` is
            ``docker.io/library/alpine:latest``).
        tls_verify: False to accept any certificate, and plain HTTP (skopeo's
            ``--src-tls-verify=false``). Registries on loopback may use plain HTTP anyway.

    Raises:
        UsageError: when ``text`` is not an image reference.
        ImageNotFound: when the registry has no such image.
        RegistryAuthFailed: when the registry refuses access.
        SourceError: when the registry cannot be reached or read.
    """
    reference = parse_reference(text)
    client = RegistryClient(Endpoint(reference.domain, reference.path), tls_verify=tls_verify)
    try:
        return RegistrySource(client, reference)
    except BaseException:
        client.close()
        raise
