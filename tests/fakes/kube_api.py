"""A small stand-in for kube-apiserver, for tests of the kubeconfig node source.

What it does, and no more:

* HTTPS on 127.0.0.1 (random port) with a throwaway CA, server certificate and client
  certificates made here with ``cryptography``; or plain HTTP (``plain_http``), as
  ``kubectl proxy`` serves, which answers requests without credentials as ``anonymous``;
* authentication like the real server's x509 and token authenticators: a client
  certificate signed by the CA (user = its CN) or a known bearer token; anything else is
  ``401 Unauthorized`` (as with anonymous auth disabled);
* authorization reduced to a deny list: users in :attr:`FakeKubeApi.forbidden` get
  ``403 Forbidden`` for nodes, with kube's wording;
* ``GET /api/v1/nodes`` (``labelSelector`` evaluated here, server-side), ``GET
  /api/v1/nodes/{name}``, and minimal ``/version``, ``/api``, ``/apis``;
* every request recorded, with its ``Authorization`` header, so tests can assert what
  reached the server.

It runs aiohttp in a background thread, so synchronous tests can use it::

    with FakeKubeApi([node("worker-1", internal_ip="10.0.0.1")]) as api:
        write_kubeconfig(path, [api.token_context("dev", user="alice")])

More routes (e.g. pod exec over websockets, which aiohttp speaks) are added to
``api.app.router`` before :meth:`FakeKubeApi.start`; handlers call :meth:`FakeKubeApi.authorize`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import re
import secrets
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
MASTER = "node-role.kubernetes.io/master"
# Paths the real server serves to anyone (system:public-info-viewer).
PUBLIC_PATHS = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz"})
# The authenticated user's name (None on public paths), for handlers.
USER = "nodeload-fake-user"  # a plain key: web.RequestKey needs aiohttp 3.11, above the floor


# -- Node objects --------------------------------------------------------------------------


def node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    internal_ip: str | None = None,
    external_ip: str | None = None,
    hostname: str | None = None,
    arch: str = "amd64",
    os: str = "linux",
    runtime: str = "containerd://1.7.13",
    kubelet: str = "v1.30.2",
    taints: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """A v1 Node as the API server returns it (the kubelet's usual labels included)."""
    addresses = [
        {"type": kind, "address": value}
        for kind, value in (("InternalIP", internal_ip), ("ExternalIP", external_ip), ("Hostname", hostname))
        if value
    ]
    spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": _uid(name),
            "resourceVersion": "1",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": os,
                "kubernetes.io/arch": arch,
                **(labels or {}),
            },
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": os,
                "containerRuntimeVersion": runtime,
                "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet,
                "kernelVersion": "6.1.0-18-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "machineID": _uid(name).replace("-", ""),
                "systemUUID": _uid(name),
                "bootID": _uid(name + "/boot"),
            },
        },
    }


def control_plane_taint() -> dict[str, str]:
    """The taint kubeadm puts on control-plane nodes."""
    return {"key": CONTROL_PLANE, "effect": "NoSchedule"}


def _uid(text: str) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(text.encode())
    h = digest.finalize().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


# -- label selectors -----------------------------------------------------------------------


class SelectorError(ValueError):
    """The label selector does not parse (the server answers 400)."""


_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_NOT_EXISTS = re.compile(rf"!\s*({_KEY})")
_EQUALITY = re.compile(rf"({_KEY})\s*(==|!=|=)\s*({_VALUE})")
_SET = re.compile(rf"({_KEY})\s+(in|notin)\s*\(([^()]*)\)")
_EXISTS = re.compile(rf"({_KEY})")


@dataclass(frozen=True)
class Requirement:
    """One comma-separated term of a label selector."""

    key: str
    op: str  # exists, !, =, !=, in, notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this term, with kube's semantics for absent keys."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("exists", "!"):
            return present == (self.op == "exists")
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # != and notin match absent keys


def parse_selector(text: str) -> list[Requirement]:
    """Parse a label selector: all terms must hold (comma is AND)."""
    if not text.strip():
        return []
    return [_parse_term(term.strip()) for term in _split_terms(text)]


def _split_terms(text: str) -> list[str]:
    """Split on the commas between terms, not those inside ``in (a,b)``."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _parse_term(term: str) -> Requirement:
    if m := _NOT_EXISTS.fullmatch(term):
        return Requirement(m[1], "!")
    if m := _EQUALITY.fullmatch(term):
        return Requirement(m[1], "=" if m[2] == "==" else m[2], frozenset({m[3]}))
    if m := _SET.fullmatch(term):
        values = [v.strip() for v in m[3].split(",")]
        if not all(re.fullmatch(_VALUE, v) for v in values):
            raise SelectorError(f"unable to parse requirement: invalid value in {term!r}")
        return Requirement(m[1], m[2], frozenset(values))
    if m := _EXISTS.fullmatch(term):
        return Requirement(m[1], "exists")
    raise SelectorError(f"unable to parse requirement: {term!r}")


# -- certificates --------------------------------------------------------------------------


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A throwaway CA that signs the server's certificate and the client certificates."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        # A name of its own: verifiers look issuers up by name, and two fakes' CAs must differ.
        name = f"fake-kube-ca-{secrets.token_hex(4)}"
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            _builder(subject, subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, *, groups: Sequence[str] = (), server: bool = False
    ) -> tuple[bytes, bytes]:
        """A (certificate PEM, key PEM) pair: a server certificate for 127.0.0.1, or a
        client certificate naming user ``common_name`` in ``groups`` (kube reads CN and O)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self._cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if server:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        # Strict verifiers (Python 3.13's default context) insist on key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- kubeconfig files ----------------------------------------------------------------------


@dataclass(frozen=True)
class KubeconfigContext:
    """One context of a kubeconfig: a server, its CA, and one user's credentials."""

    name: str
    server: str
    ca_pem: bytes
    user: str  # the kubeconfig's user entry (the fake names the Kubernetes user the same)
    token: str | None = None
    client_cert: tuple[bytes, bytes] | None = None  # (certificate PEM, key PEM)


_FIRST = "<first context>"


def write_kubeconfig(
    path: Path,
    contexts: Sequence[KubeconfigContext],
    *,
    current: str | None = _FIRST,
    cert_files: bool = False,
) -> Path:
    """Write a kubeconfig with ``contexts`` (one cluster each) and return its path.

    ``current`` is the current-context (default: the first context; None: none set).
    ``cert_files`` puts the CA and client certificates in files next to the kubeconfig,
    referred to by relative paths, instead of embedding them as ``*-data``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    clusters: list[dict[str, Any]] = []
    users: dict[str, dict[str, str]] = {}
    for ctx in contexts:
        cluster: dict[str, Any] = {"server": ctx.server}
        cluster.update(
            _pem_field(path, f"{ctx.name}-ca.crt", "certificate-authority", ctx.ca_pem, cert_files)
        )
        clusters.append({"name": ctx.name, "cluster": cluster})
        users.setdefault(ctx.user, _user_entry(path, ctx, cert_files))
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": [{"name": name, "user": user} for name, user in users.items()],
        "contexts": [{"name": c.name, "context": {"cluster": c.name, "user": c.user}} for c in contexts],
    }
    if current is not None:
        config["current-context"] = contexts[0].name if current == _FIRST else current
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _user_entry(path: Path, ctx: KubeconfigContext, cert_files: bool) -> dict[str, str]:
    user: dict[str, str] = {}
    if ctx.token is not None:
        user["token"] = ctx.token
    if ctx.client_cert is not None:
        cert, key = ctx.client_cert
        user.update(_pem_field(path, f"{ctx.user}.crt", "client-certificate", cert, cert_files))
        user.update(_pem_field(path, f"{ctx.user}.key", "client-key", key, cert_files))
    return user


def _pem_field(path: Path, filename: str, key: str, pem: bytes, as_file: bool) -> dict[str, str]:
    if as_file:
        (path.parent / filename).write_bytes(pem)
        return {key: filename}  # relative: resolved against the kubeconfig's directory
    return {f"{key}-data": base64.b64encode(pem).decode()}


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake saw it; ``user`` is None when authentication failed."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    authorization: str | None = None  # the header as sent


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    """A ``kind: Status`` failure, as the API server sends for every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


class FakeKubeApi:
    """kube-apiserver's node endpoints, over HTTPS with real authentication.

    Attributes:
        nodes: The cluster's Node objects by name; tests may change them at any time.
        forbidden: Users denied every verb on nodes (403).
        requests: Every request received, in order.
        app: The aiohttp application; add routes to ``app.router`` before :meth:`start`.
        plain_http: Serve plain HTTP instead of HTTPS.
        anonymous: The user of requests without credentials (None: they get 401).
    """

    def __init__(
        self,
        nodes: Iterable[Mapping[str, Any]] = (),
        *,
        plain_http: bool = False,
        anonymous: str | None = None,
    ) -> None:
        self.plain_http, self.anonymous = plain_http, anonymous
        self.nodes: dict[str, Mapping[str, Any]] = {n["metadata"]["name"]: n for n in nodes}
        self.forbidden: set[str] = set()
        self.requests: list[RecordedRequest] = []
        self.ca = CertificateAuthority()
        self.port = 0
        self._tokens: dict[str, str] = {}  # token -> user
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._authenticate])
        self.app.router.add_get("/version", self._version)
        self.app.router.add_get("/version/", self._version)  # the official client's spelling
        self.app.router.add_get("/api", self._api_versions)
        self.app.router.add_get("/apis", self._api_groups)
        self.app.router.add_get("/api/v1/nodes", self._list_nodes)
        self.app.router.add_get("/api/v1/nodes/{name}", self._get_node)

    @property
    def url(self) -> str:
        """The server URL for a kubeconfig."""
        return f"{'http' if self.plain_http else 'https'}://127.0.0.1:{self.port}"

    # credentials

    def add_token(self, user: str, token: str | None = None) -> str:
        """Accept bearer ``token`` (default: a random one) as ``user``; returns the token."""
        token = token or secrets.token_urlsafe(24)
        self._tokens[token] = user
        return token

    def token_context(self, name: str, *, user: str, token: str | None = None) -> KubeconfigContext:
        """A kubeconfig context whose user authenticates with a bearer token."""
        return KubeconfigContext(name, self.url, self.ca.cert_pem, user, token=self.add_token(user, token))

    def cert_context(self, name: str, *, user: str, groups: Sequence[str] = ()) -> KubeconfigContext:
        """A kubeconfig context whose user authenticates with a client certificate."""
        return KubeconfigContext(
            name, self.url, self.ca.cert_pem, user, client_cert=self.ca.issue(user, groups=groups)
        )

    # lifecycle

    def start(self) -> FakeKubeApi:
        """Serve on a random port of 127.0.0.1 from a background thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kube-api", daemon=True)
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

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _serve(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        ssl_context = None if self.plain_http else self._ssl_context()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        return int(self._runner.addresses[0][1])

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        # Drop connections a client still holds open (one kept alive by an exception's
        # traceback, say): a graceful TLS close would wait for the client's close_notify,
        # and the loop stops before it comes, leaking the socket.
        for connection in list(runner.server.connections if runner.server else ()):
            if connection.transport is not None:
                connection.transport.abort()
        await runner.cleanup()

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.ca.issue("kube-apiserver", server=True)
        # load_cert_chain reads files only; they are not needed once loaded.
        with tempfile.TemporaryDirectory(prefix="fake-kube-api-") as tmp:
            (Path(tmp) / "tls.crt").write_bytes(cert)
            (Path(tmp) / "tls.key").write_bytes(key)
            context.load_cert_chain(Path(tmp) / "tls.crt", Path(tmp) / "tls.key")
        context.load_verify_locations(cadata=self.ca.cert_pem.decode())
        # Optional on the socket, like kube-apiserver: token users send no certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    # authentication and authorization

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        user, authorization = self._user(request), request.headers.get("Authorization")
        if user is None and authorization is None:
            user = self.anonymous
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), user, authorization)
        )
        if user is None and request.path not in PUBLIC_PATHS:
            return status(401, "Unauthorized", "Unauthorized")
        request[USER] = user
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return status(404, "NotFound", "the server could not find the requested resource")

    def _user(self, request: web.Request) -> str | None:
        """The user a request authenticates as: a verified client certificate's CN, else
        a known bearer token's user (the first authenticator that succeeds wins)."""
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        for rdn in (peer or {}).get("subject", ()):
            for attribute, value in rdn:
                if attribute == "commonName":
                    return str(value)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self._tokens.get(token) if scheme.lower() == "bearer" else None

    def authorize(
        self, request: web.Request, verb: str, resource: str, name: str | None = None
    ) -> web.Response | None:
        """The 403 answer (kube's wording) if the user is in :attr:`forbidden`, else None."""
        user = request[USER]
        if user not in self.forbidden:
            return None
        subject = f'{resource} "{name}"' if name else resource
        message = (
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            'in API group "" at the cluster scope'
        )
        return status(403, "Forbidden", message, kind=resource, **({"name": name} if name else {}))

    # routes

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": "v1.30.2-fake",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2024-06-11T00:00:00Z",
                "goVersion": "go1.22.4",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def _list_nodes(self, request: web.Request) -> web.Response:
        if denied := self.authorize(request, "list", "nodes"):
            return denied
        try:
            requirements = parse_selector(request.query.get("labelSelector", ""))
        except SelectorError as e:
            return status(400, "BadRequest", str(e))
        items = [
            n
            for n in self.nodes.values()
            if all(r.matches(n["metadata"].get("labels", {})) for r in requirements)
        ]
        return web.json_response(
            {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": items}
        )

    async def _get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if denied := self.authorize(request, "get", "nodes", name):
            return denied
        if name not in self.nodes:
            return status(404, "NotFound", f'nodes "{name}" not found', name=name, kind="nodes")
        return web.json_response(self.nodes[name])
