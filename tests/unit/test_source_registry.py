"""The registry source (docker://) against a fake registry: Bearer tokens, redirects, Range,
rate limits and TLS. What a real registry shows (Basic auth, skopeo-pushed images, the
push into containerd) is in tests/integration/test_source_registry.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeload.errors import ImageNotFound, RegistryAuthFailed, SourceError
from nodeload.graph import resolve
from nodeload.image import Descriptor, read_document
from nodeload.platforms import Platform
from nodeload.sources import SourceOptions, open_source
from nodeload.sources.registry import Endpoint, is_loopback, open_registry
from tests.fakes.registry import FakeRegistry
from tests.helpers.oci import ImageSpec, LayoutInfo, write_layout
from tests.helpers.registry import auth_entry, isolate_auth, write_auth_file

AMD64 = Platform("linux", "amd64")


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_auth(monkeypatch, tmp_path / "home")


@pytest.fixture()
def layout(tmp_path: Path) -> LayoutInfo:
    return write_layout(
        tmp_path / "img", [ImageSpec((1, 2), layer_size=200_000), ImageSpec((3,), "linux/arm64")]
    )


def _serve(layout: LayoutInfo, **kwargs: object) -> Iterator[FakeRegistry]:
    with FakeRegistry(**kwargs) as registry:  # type: ignore[arg-type]
        registry.push_layout("team/app", layout, "v1")
        yield registry


@pytest.fixture()
def bearer(layout: LayoutInfo) -> Iterator[FakeRegistry]:
    yield from _serve(layout, auth="bearer", users={"bob": "secret"})


def _read(source: object, desc: Descriptor, offset: int = 0) -> bytes:
    with source.open_blob(desc, offset) as stream:  # type: ignore[attr-defined]
        return b"".join(iter(lambda: stream.read(50_000), b""))


def _login(home: Path, registry: FakeRegistry, user: str = "bob", password: str = "secret") -> Path:
    return write_auth_file(home / ".docker" / "config.json", {registry.host: auth_entry(user, password)})


def test_anonymous_bearer_token(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    with open_source(f"docker://{bearer.host}/team/app:v1") as source:
        assert source.reference == f"{bearer.host}/team/app:v1"
        assert source.root == Descriptor(layout.root.media_type, layout.root.digest, layout.root.size)
        graph = resolve(source, AMD64)
        for layer in graph.layers:
            assert hashlib.sha256(_read(source, layer)).hexdigest() == layer.digest[7:]
    tokens = [r for r in bearer.requests if r.path == "/token"]
    assert [t.authorization for t in tokens] == [""]  # one anonymous token for everything
    manifests = [r for r in bearer.requests if "/manifests/" in r.path]
    assert len(manifests) == 2  # the index (by tag) once, then the amd64 manifest


def test_bearer_token_for_credentials(bearer: FakeRegistry, home: Path) -> None:
    bearer.private.add("team/app")
    _login(home, bearer)
    with open_registry(f"{bearer.host}/team/app:v1") as source:
        resolve(source, AMD64)
    (token,) = [r for r in bearer.requests if r.path == "/token"]
    assert token.authorization.startswith("Basic ")


def test_private_repository_without_credentials(bearer: FakeRegistry) -> None:
    bearer.private.add("team/app")
    with pytest.raises(RegistryAuthFailed) as caught:
        open_registry(f"{bearer.host}/team/app:v1")
    message = str(caught.value)
    assert "refused no credentials (looked in: no auth file exists)" in message
    assert f"docker login {bearer.host}" in message


def test_wrong_password_names_the_user_and_file(bearer: FakeRegistry, home: Path) -> None:
    config = _login(home, bearer, password="Pa55-not-it")
    with pytest.raises(RegistryAuthFailed) as caught:
        open_registry(f"{bearer.host}/team/app:v1")
    message = str(caught.value)
    assert f"user 'bob' from auths['{bearer.host}'] in {config}" in message
    assert "incorrect username or password" in message and "Pa55-not-it" not in message


def test_identity_token_is_exchanged(bearer: FakeRegistry, home: Path) -> None:
    bearer.private.add("team/app")
    bearer.identity_tokens["refresh-123"] = "bob"
    write_auth_file(home / ".docker" / "config.json", {bearer.host: {"identitytoken": "refresh-123"}})
    with open_registry(f"{bearer.host}/team/app:v1") as source:
        resolve(source, AMD64)
    assert [r.method for r in bearer.requests if r.path == "/token"] == ["POST"]


def test_expired_token_is_renewed(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    layer = layout.images[0].layers[0]
    with open_registry(f"{bearer.host}/team/app:v1") as source:
        bearer.expire_tokens()
        assert _read(source, layer) == layout.blobs[layer.digest]
    assert len([r for r in bearer.requests if r.path == "/token"]) == 2


def test_basic_auth(layout: LayoutInfo, home: Path) -> None:
    for registry in _serve(layout, auth="basic", users={"bob": "secret"}):
        with pytest.raises(RegistryAuthFailed, match=r"needs a user name and password.*no credentials"):
            open_registry(f"{registry.host}/team/app:v1")
        _login(home, registry)
        with open_registry(f"{registry.host}/team/app:v1") as source:
            resolve(source, AMD64)


def test_redirected_blobs_resume_without_our_authorization(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    bearer.redirect_blobs = True
    layer = layout.images[0].layers[0]
    with open_registry(f"{bearer.host}/team/app:v1") as source:
        assert _read(source, layer, 12_345) == layout.blobs[layer.digest][12_345:]
    (storage,) = [r for r in bearer.requests if r.path.startswith("/storage/")]
    assert storage.host.startswith("localhost:")
    assert (storage.authorization, storage.range) == ("", "bytes=12345-")


def test_a_registry_that_ignores_range(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    bearer.ignore_range = True
    layer = layout.images[0].layers[1]
    with open_registry(f"{bearer.host}/team/app:v1") as source:
        assert _read(source, layer, 777) == layout.blobs[layer.digest][777:]
        assert _read(source, layer, layer.size) == b""


def test_unknown_tag_and_repository(bearer: FakeRegistry) -> None:
    with pytest.raises(ImageNotFound, match=rf"{bearer.host}/team/app: tag 'v9' not found.*manifest unknown"):
        open_registry(f"{bearer.host}/team/app:v9")
    with pytest.raises(ImageNotFound, match=rf"{bearer.host}/team/nothing: tag 'latest' not found"):
        open_registry(f"{bearer.host}/team/nothing")


def test_by_digest(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    pinned = f"{bearer.host}/team/app@{layout.root.digest}"
    with open_registry(pinned) as source:
        assert source.reference == pinned
        assert source.root.digest == layout.root.digest


def test_rate_limit_says_when_to_retry(bearer: FakeRegistry) -> None:
    bearer.rate_limited = True
    with pytest.raises(SourceError, match=r"HTTP 429.*pull rate limit.*try again after 30 s"):
        open_registry(f"{bearer.host}/team/app:v1")


def test_manifest_that_does_not_match_its_digest(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    child = layout.images[0].manifest
    repo = bearer.repositories["team/app"]
    media_type, data = repo.manifests[child.digest]
    repo.manifests[child.digest] = (media_type, data.replace(b"schemaVersion", b"schemaVersioN"))
    with (
        open_registry(f"{bearer.host}/team/app:v1") as source,
        pytest.raises(SourceError, match="does not match"),
    ):
        resolve(source, AMD64)


def test_blob_missing_from_the_registry(bearer: FakeRegistry, layout: LayoutInfo) -> None:
    layer = layout.images[0].layers[0]
    del bearer.repositories["team/app"].blobs[layer.digest]
    with (
        open_registry(f"{bearer.host}/team/app:v1") as source,
        pytest.raises(SourceError, match=rf"team/app: blob {layer.digest} not found.*blob unknown"),
    ):
        _read(source, layer)


def test_tls_verified_by_default(layout: LayoutInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for registry in _serve(layout, tls=True):
        text = f"docker://{registry.host}/team/app:v1"
        with pytest.raises(
            SourceError,
            match=rf"TLS with https://{registry.host} failed.*CERTIFICATE_VERIFY_FAILED.*"
            r"SourceOptions\(tls_verify=False\)",
        ):
            open_source(text)
        with open_source(text, options=SourceOptions(tls_verify=False)) as source:
            read_document(source, source.root)
        assert registry.ca is not None
        (tmp_path / "ca.pem").write_bytes(registry.ca.cert_pem)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
        with open_source(text) as source:  # verified against the CA the user trusts
            read_document(source, source.root)


def test_unreachable_registry_names_the_address() -> None:
    with FakeRegistry() as gone:
        host = gone.host
    with pytest.raises(
        SourceError, match=rf"cannot reach the registry at https://{host}/v2/.*Connection refused"
    ):
        open_registry(f"{host}/team/app:v1")


def test_docker_hub_names() -> None:
    hub = Endpoint("docker.io", "library/alpine")
    assert (hub.host, hub.login_command) == ("registry-1.docker.io", "docker login")
    other = Endpoint("ghcr.io", "me/app")
    assert (other.host, other.login_command) == ("ghcr.io", "docker login ghcr.io")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.8.9.10:443", True),
        ("[::1]:5000", True),
        ("localhost.example.com", False),
        ("10.0.0.1:5000", False),
        ("ghcr.io", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
