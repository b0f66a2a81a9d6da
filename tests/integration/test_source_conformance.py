"""One set of checks every image source passes, as go-containerregistry's ``validate`` does for
its images: a new source is one more entry in ``KINDS``.

For each kind, an image is made the way users make it (``docker build`` into the local
engine, ``docker save``, an OCI layout, a tar of it, ``skopeo copy --all`` into a registry,
``ctr images import --all-platforms`` into a containerd as nerdctl would hold it),
then read back through :func:`nodeload.sources.open_source` as the user would name it:

* every blob of the host's platform (index, manifest, config, layers) streams, in bounded
  chunks, with the size and sha256 digest its descriptor claims;
* a blob opened at an offset streams its tail (and nothing at its end);
* the source's name for the image is the one the user expects;
* an image that is not there is ImageNotFound, and the message names it;
* a multi-platform image also resolves for another platform: for the kinds that can hold
  one (``MULTI_PLATFORM``); the Docker engine's classic store and ``docker save`` keep one
  platform per image, so that check has nothing to read there.

Then each kind is pushed, as ``nodeload.push`` pushes it (through a real sshd into a real
containerd), under the same three checks, whichever way its blobs leave it (the engine's kind
twice: its own ``docker push`` into the endpoint, the default, and ``docker save``):

* byte accounting: a push to an empty node reports as sent exactly the bytes of the blobs it
  left in the node's content store (read on disk), and a rerun sends none;
* the name check: a name read from inside the source (an archive's RepoTags, a layout's
  annotation) never repoints an image of another content already on the node; a name the user
  wrote does, and so does ``name=``;
* twins: over layers the node holds uncompressed (what ``docker save | ctr import`` leaves),
  a source whose manifest nodeload writes sends documents only; one whose manifest pins its
  compressed layers sends them (its digest is the image's identity).

Per-source tests keep what is particular to a source (selection inside an archive, the
layer cache, authentication...).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

import nodeload
from nodeload.errors import ImageNotFound
from nodeload.graph import ImageGraph, resolve
from nodeload.image import Descriptor, ImageSource
from nodeload.platforms import Platform
from nodeload.sources import LayerCache, Source, SourceOptions, open_source
from tests.helpers.docker_images import build_image, docker_client, remove_images
from tests.helpers.oci import LayoutInfo, tar_directory, write_layout
from tests.helpers.registry import Registry
from tests.integration.nodes import Containerd, Sshd

pytestmark = pytest.mark.integration

KINDS = ("docker-daemon", "docker-archive", "oci", "oci-archive", "docker", "containerd")
MULTI_PLATFORM = ("oci", "oci-archive", "docker", "containerd")

HOST = Platform.parse(f"linux/{platform.machine()}")
OTHER = Platform.parse("linux/arm64" if HOST.architecture == "amd64" else "linux/amd64")
# Per process, so that concurrent sessions (pytest-xdist workers) do not collide.
TAG = f"nodeload-test/conformance-{os.getpid()}:v1"
LAYOUT_NAME = "example.com/conformance/app:v1"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Case:
    """One kind of source holding the test image, named as a user names it."""

    text: str  # e.g. oci:/tmp/x:v1
    reference: str  # the name the source should give the image
    missing: str  # the same source naming an image it does not hold
    open: Callable[[str], AbstractContextManager[Source]]
    options: SourceOptions = dataclasses.field(default_factory=SourceOptions)  # how a push reads it


# -- the images, one per kind ----------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> LayoutInfo:
    """A two-platform OCI layout (host and another), tagged v1 and named LAYOUT_NAME."""
    directory = tmp_path_factory.mktemp("conformance") / "layout"
    return write_layout(directory, platforms=[str(HOST), str(OTHER)], ref="v1", name=LAYOUT_NAME, seed=7)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    try:
        client = docker_client()
    except Exception as exc:  # no socket, no permission, daemon down...
        pytest.skip(f"no Docker engine reachable ({exc}); start one: dockerd >/var/log/dockerd.log 2>&1 &")
    remove_images(client, "conformance")  # leftovers of killed sessions
    yield client
    remove_images(client, "conformance", mine=True)
    client.close()


@pytest.fixture(scope="module")
def daemon_image(client: docker.DockerClient) -> str:
    """TAG, built into the local engine: busybox plus two payload layers."""
    build_image(client, TAG, [(71, 300_000), (72, 100_000)], label="conformance")
    return TAG


@pytest.fixture(scope="module")
def saved_archive(daemon_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``docker save`` of TAG."""
    if shutil.which("docker") is None:
        pytest.skip("needs the docker CLI")
    archive = tmp_path_factory.mktemp("saved") / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), daemon_image], check=True, timeout=120)
    return archive


@pytest.fixture(scope="module")
def registry_image(registry: Registry, layout: LayoutInfo) -> str:
    """The layout, both platforms, copied into the registry as conformance/app:v1."""
    registry.copy_in(f"oci:{layout.path}:v1", "conformance/app:v1", all_platforms=True)
    return "conformance/app:v1"


@pytest.fixture(scope="module")
def containerd_image(
    containerd: Containerd, layout: LayoutInfo, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The layout, both platforms, imported into the containerd's ``default`` namespace (nerdctl's)."""
    archive = tar_directory(layout.path, tmp_path_factory.mktemp("import") / "layout.tar")
    containerd.ctr("images", "import", "--all-platforms", str(archive), namespace="default")
    return LAYOUT_NAME


def _cached(cache: Path) -> Callable[[str], AbstractContextManager[Source]]:
    return lambda text: open_source(text, cache=LayerCache(cache))


def _case(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    """The Case of ``kind``; only its own fixtures are set up (an oci: case needs no Docker)."""
    opener = _cached(tmp_path / "cache")
    if kind == "docker-daemon":
        tag = request.getfixturevalue("daemon_image")
        return Case(
            f"docker-daemon:{tag}", f"docker.io/{tag}", "docker-daemon:nodeload-test/absent:v0", opener
        )
    if kind == "docker-archive":
        archive = request.getfixturevalue("saved_archive")
        missing = f"docker-archive:{archive}:nodeload-test/absent:v0"
        return Case(f"docker-archive:{archive}", f"docker.io/{TAG}", missing, opener)
    layout: LayoutInfo = request.getfixturevalue("layout")
    if kind == "oci":
        return Case(f"oci:{layout.path}:v1", LAYOUT_NAME, f"oci:{layout.path}:absent", opener)
    if kind == "oci-archive":
        archive = tar_directory(layout.path, tmp_path / "layout.tar")
        return Case(f"oci-archive:{archive}:v1", LAYOUT_NAME, f"oci-archive:{archive}:absent", opener)
    if kind == "containerd":
        name = request.getfixturevalue("containerd_image")
        node: Containerd = request.getfixturevalue("containerd")
        options = SourceOptions(containerd_address=str(node.socket), containerd_namespace="default")
        return Case(
            f"containerd:{name}",
            name,
            "containerd:example.com/conformance/absent:v1",
            lambda text: open_source(text, options=options),
            options,
        )
    assert kind == "docker"
    registry: Registry = request.getfixturevalue("registry")
    name = request.getfixturevalue("registry_image")
    absent = registry.ref(name.replace(":v1", ":absent"))
    return Case(registry.ref(name), f"{registry.host}/{name}", absent, opener)


@pytest.fixture(params=KINDS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return _case(request.param, request, tmp_path)


@pytest.fixture(params=MULTI_PLATFORM)
def multi_platform_case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return _case(request.param, request, tmp_path)


# -- the checks --------------------------------------------------------------------------------


def _blobs(graph: ImageGraph) -> list[Descriptor]:
    """Everything one platform consists of: indexes, manifest, config, layers."""
    return [doc.desc for doc, _ in graph.indexes] + [graph.manifest.desc, graph.config.desc, *graph.layers]


def _read(source: ImageSource, desc: Descriptor, offset: int = 0) -> bytes:
    """The blob from ``offset``, read as a push reads it: in bounded chunks."""
    parts = []
    with source.open_blob(desc, offset) as stream:
        while data := stream.read(CHUNK):
            assert len(data) <= CHUNK
            parts.append(data)
    return b"".join(parts)


def _check_blobs(source: ImageSource, graph: ImageGraph) -> None:
    for desc in _blobs(graph):
        data = _read(source, desc)
        assert (len(data), "sha256:" + hashlib.sha256(data).hexdigest()) == (desc.size, desc.digest)


def test_every_blob_matches_its_descriptor(case: Case) -> None:
    with case.open(case.text) as source:
        graph = resolve(source, HOST)
        assert graph.platform.matches(HOST)
        assert graph.root == source.root
        _check_blobs(source, graph)


def test_a_blob_opened_at_an_offset_streams_its_tail(case: Case) -> None:
    with case.open(case.text) as source:
        graph = resolve(source, HOST)
        for desc in _blobs(graph):
            whole = _read(source, desc)
            for offset in (1, desc.size // 2, desc.size - 1):
                assert _read(source, desc, offset) == whole[offset:]
            assert _read(source, desc, desc.size) == b""


def test_the_reference_is_the_name_the_user_expects(case: Case) -> None:
    with case.open(case.text) as source:
        assert source.reference == case.reference


def test_a_missing_image_is_image_not_found_and_named(case: Case) -> None:
    with pytest.raises(ImageNotFound) as caught:
        case.open(case.missing).close()
    assert "absent" in str(caught.value)


def test_another_platform_of_a_multi_platform_image(multi_platform_case: Case) -> None:
    with multi_platform_case.open(multi_platform_case.text) as source:
        host, other = resolve(source, HOST), resolve(source, OTHER)
        assert other.platform.matches(OTHER)
        assert other.manifest.desc.digest != host.manifest.desc.digest
        _check_blobs(source, other)


# -- pushed ------------------------------------------------------------------------------------

# The engine's image once more, leaving the engine by ``docker save`` instead of its own push.
PUSHED = (*KINDS, "docker-daemon/save")
# Kinds whose manifest nodeload writes (from the engine's or an archive's uncompressed layers):
# a layer may be replaced by the node's own copy of the same content.
REWRITTEN = ("docker-daemon", "docker-daemon/save", "docker-archive")
# Kinds that take the name on the nodes from inside the source rather than from the user's words.
NAMED_INSIDE = ("docker-archive", "oci", "oci-archive")
CONTENT = Path("root") / "io.containerd.content.v1.content" / "blobs" / "sha256"


@pytest.fixture(params=PUSHED)
def pushed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Case]:
    """(kind, case); the layer cache is the test's own, so that every push compresses afresh."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    kind = request.param
    case = _case(kind.removesuffix("/save"), request, tmp_path)
    if kind.endswith("/save"):
        case = dataclasses.replace(case, options=dataclasses.replace(case.options, export="save"))
    return kind, case


def _push(case: Case, sshd: Sshd, node: Containerd, name: str | None = None) -> nodeload.NodeResult:
    return _push_text(case.text, case.options, sshd, node, name)


def _push_text(
    text: str, source: SourceOptions, sshd: Sshd, node: Containerd, name: str | None = None
) -> nodeload.NodeResult:
    options = nodeload.PushOptions(
        source=source,
        ssh=nodeload.SSHOptions(identity=sshd.client_key, known_hosts=sshd.known_hosts),
        store=nodeload.StoreOptions(socket=str(node.socket), name=name),
    )
    [result] = nodeload.push(text, [sshd.node], options)
    return result


def _stored(node: Containerd) -> dict[str, bytes]:
    """The node's content store as it is on disk: digest -> blob."""
    return {f"sha256:{p.name}": p.read_bytes() for p in (node.root / CONTENT).glob("*")}


def _record(node: Containerd, name: str) -> str | None:
    """The digest the image record ``name`` points at, read with ctr (None: no such record)."""
    for line in node.ctr("images", "ls").splitlines()[1:]:
        ref, _, digest, *_ = line.split()
        if ref == name:
            return digest
    return None


def test_a_push_reports_the_bytes_the_node_received(
    pushed: tuple[str, Case], sshd: Sshd, fresh_containerd: Containerd
) -> None:
    _, case = pushed
    first = _push(case, sshd, fresh_containerd)
    assert first.status == "ok", first.error
    received = sum(len(blob) for blob in _stored(fresh_containerd).values())
    assert first.bytes_sent == received
    assert first.wire_bytes_sent is not None and first.wire_bytes_sent >= received  # all of it crossed SSH
    assert _record(fresh_containerd, case.reference) == first.digest

    again = _push(case, sshd, fresh_containerd)
    assert (again.status, again.bytes_sent, again.digest) == ("ok", 0, first.digest)
    assert sum(len(blob) for blob in _stored(fresh_containerd).values()) == received


def test_a_name_from_inside_the_source_never_repoints_another_image(
    pushed: tuple[str, Case], sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    kind, case = pushed
    other = write_layout(tmp_path / "other", ref="v1", seed=97)
    squatter = _push_text(f"oci:{other.path}:v1", SourceOptions(), sshd, fresh_containerd, case.reference)
    assert squatter.status == "ok", squatter.error

    result = _push(case, sshd, fresh_containerd)
    if kind in NAMED_INSIDE:
        assert result.status == "failed" and result.error and "will not repoint" in result.error
        assert f"StoreOptions.name={case.reference!r}" in result.error  # the library's words
        assert _record(fresh_containerd, case.reference) == squatter.digest
        result = _push(case, sshd, fresh_containerd, name=case.reference)  # the user's own words
    assert result.status == "ok", result.error
    assert _record(fresh_containerd, case.reference) == result.digest != squatter.digest


def test_layers_the_node_holds_uncompressed_are_sent_only_when_the_manifest_pins_them(
    pushed: tuple[str, Case], sshd: Sshd, fresh_containerd: Containerd
) -> None:
    kind, case = pushed
    with case.open(case.text) as source:
        graph = resolve(source, HOST)
        layers = {desc.digest: _read(source, desc) for desc in graph.layers}
    for data in layers.values():  # each layer as docker save | ctr import leaves it
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        _ingest(fresh_containerd, raw)
    before = _stored(fresh_containerd)

    result = _push(case, sshd, fresh_containerd)
    assert result.status == "ok", result.error
    new = {d: blob for d, blob in _stored(fresh_containerd).items() if d not in before}
    assert result.bytes_sent == sum(len(blob) for blob in new.values())
    sent_layers = {d for d, blob in new.items() if not blob.lstrip().startswith(b"{")}
    if kind in REWRITTEN:
        assert not sent_layers, "a layer the node holds uncompressed was sent again"
    else:
        assert sent_layers == set(layers) - set(before)
    assert "complete" in fresh_containerd.ctr("images", "check", f"name=={case.reference}")


def _ingest(node: Containerd, data: bytes) -> None:
    """Put ``data`` in the node's content store with ctr, as an import would."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    subprocess.run(
        ["ctr", "--address", str(node.socket), "-n", "k8s.io", "content", "ingest",
         "--expected-digest", digest, "--expected-size", str(len(data)), f"seed-{digest}"],
        input=data, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
