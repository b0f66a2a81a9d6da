"""The registry source (docker://) against a real registry (distribution, Debian's
``docker-registry``) started as a plain process on 127.0.0.1, filled with ``skopeo copy``.

What every source does (blobs and their digests, offsets, names, a missing tag) is checked in
test_source_conformance.py; here: logging in with the files users have, the errors users see,
and ``nodeload push docker://...`` into a real containerd through a real sshd. Bearer tokens,
redirects and TLS need a registry set up otherwise: tests/unit/test_source_registry.py.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import pytest

from nodeload.errors import ImageNotFound, RegistryAuthFailed
from nodeload.graph import resolve
from nodeload.image import MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST
from nodeload.platforms import Platform
from nodeload.sources import open_source
from tests.helpers.oci import ImageSpec, LayoutInfo, write_layout
from tests.helpers.registry import Registry, auth_entry, isolate_auth, write_auth_file
from tests.integration.cli import Cli, blobs_of, content, images
from tests.integration.conftest import REGISTRY_USERS
from tests.integration.nodes import Containerd

pytestmark = pytest.mark.integration

HOST = Platform.parse(f"linux/{platform.machine()}")
OTHER = "linux/arm64" if HOST.architecture == "amd64" else "linux/amd64"
USER, PASSWORD = next(iter(REGISTRY_USERS.items()))


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No auth file of the machine's user is read."""
    return isolate_auth(monkeypatch, tmp_path / "home")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> LayoutInfo:
    """A two-platform image; the host's first layer is 3 MB, more than one chunk of a push."""
    specs = [ImageSpec((81, 82), str(HOST), layer_size=3_000_000), ImageSpec((83,), OTHER)]
    return write_layout(tmp_path_factory.mktemp("image") / "layout", specs, ref="v1")


@pytest.fixture(scope="module")
def public(registry: Registry, image: LayoutInfo) -> str:
    """``docker://127.0.0.1:PORT/app:v1`` in the open registry, digests as in ``image``."""
    registry.copy_in(f"oci:{image.path}:v1", "app:v1", all_platforms=True)
    return registry.ref("app:v1")


@pytest.fixture(scope="module")
def private(auth_registry: Registry, image: LayoutInfo) -> str:
    """``docker://127.0.0.1:PORT/team/app:v1`` in the registry that wants a login."""
    auth_registry.copy_in(f"oci:{image.path}:v1", "team/app:v1", all_platforms=True)
    return auth_registry.ref("team/app:v1")


def test_dockers_media_types(registry: Registry, image: LayoutInfo) -> None:
    registry.copy_in(f"oci:{image.path}:v1", "app-docker:v1", all_platforms=True, docker_format=True)
    with open_source(registry.ref("app-docker:v1")) as source:
        assert source.rewritable is False
        assert source.refresh(source.root) is False
        assert source.root.media_type == MEDIA_DOCKER_LIST
        graph = resolve(source, HOST)
        assert graph.manifest.desc.media_type == MEDIA_DOCKER_MANIFEST
        assert graph.config.desc.digest == image.images[0].config.digest
        assert [layer.digest for layer in graph.layers] == [layer.digest for layer in image.images[0].layers]


def test_pull_by_digest(public: str, image: LayoutInfo) -> None:
    pinned = public.replace(":v1", f"@{image.root.digest}")
    with open_source(pinned) as source:
        assert source.reference == pinned.removeprefix("docker://")
        assert source.root.digest == image.root.digest


def test_login_from_dockers_config_json(auth_registry: Registry, private: str, home: Path) -> None:
    write_auth_file(home / ".docker" / "config.json", {auth_registry.host: auth_entry(USER, PASSWORD)})
    with open_source(private) as source:
        resolve(source, HOST)


def test_login_from_skopeos_auth_file(
    auth_registry: Registry, private: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = write_auth_file(
        tmp_path / "auth.json", {auth_registry.host: {"username": USER, "password": PASSWORD}}
    )
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    with open_source(private) as source:
        resolve(source, HOST)


def test_no_credentials_says_how_to_log_in(auth_registry: Registry, private: str) -> None:
    with pytest.raises(RegistryAuthFailed) as caught:
        open_source(private)
    message = str(caught.value)
    assert "needs a user name and password" in message
    assert "no credentials (looked in: no auth file exists)" in message
    assert f"docker login {auth_registry.host}" in message


def test_wrong_credentials_say_which_were_used(auth_registry: Registry, private: str, home: Path) -> None:
    config = write_auth_file(
        home / ".docker" / "config.json", {auth_registry.host: auth_entry(USER, "nope-123")}
    )
    with pytest.raises(RegistryAuthFailed) as caught:
        open_source(private)
    message = str(caught.value)
    assert f"{auth_registry.host}/team/app: pull access denied (HTTP 401" in message
    assert f"user {USER!r} from auths['{auth_registry.host}'] in {config}" in message
    assert f"docker login {auth_registry.host}" in message
    assert "nope-123" not in message


def test_unknown_tag_and_repository_name_the_repository(registry: Registry, public: str) -> None:
    with pytest.raises(ImageNotFound, match=rf"^{registry.host}/app: tag 'v404' not found.*manifest unknown"):
        open_source(registry.ref("app:v404"))
    with pytest.raises(ImageNotFound, match=rf"^{registry.host}/nobody/here: tag 'v1' not found"):
        open_source(registry.ref("nobody/here:v1"))


def test_a_resumed_read_with_credentials(
    auth_registry: Registry, private: str, image: LayoutInfo, home: Path
) -> None:
    write_auth_file(home / ".docker" / "config.json", {auth_registry.host: auth_entry(USER, PASSWORD)})
    layer = image.images[0].layers[0]
    whole = image.blobs[layer.digest]
    with open_source(private) as source:
        for offset in (1 << 20, len(whole) - 10):  # past the first chunk, and near the end
            with source.open_blob(layer, offset) as stream:
                assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(whole[offset:]).digest()


# -- the CLI -----------------------------------------------------------------------------------


def test_push_from_a_registry(
    cli: Cli, fresh_containerd: Containerd, registry: Registry, public: str, image: LayoutInfo
) -> None:
    node = fresh_containerd
    first = cli.push_ok(public, node)  # a registry on loopback: plain HTTP without a flag
    assert first["name"] == f"{registry.host}/app:v1"
    assert first["digest"] == image.root.digest
    assert image.index is not None
    expected = blobs_of(image.images[0]) | {image.index.digest}
    assert content(node) == expected  # no blob of the other platform
    assert first["blobs_sent"] == len(expected)
    assert f"{registry.host}/app:v1" in images(node)

    again = cli.push_ok(public, node)
    assert (again["blobs_sent"], again["bytes_sent"]) == (0, 0)
    assert content(node) == expected


def test_push_refused_by_the_registry_fails_cleanly(
    cli: Cli, containerd: Containerd, auth_registry: Registry, private: str
) -> None:
    run = cli.push(private, containerd, json=False)
    assert run.code == 1
    assert f"docker login {auth_registry.host}" in run.err
    assert "Traceback" not in run.err
    assert f"{auth_registry.host}/team/app:v1" not in images(containerd)
