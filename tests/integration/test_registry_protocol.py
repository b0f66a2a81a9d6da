"""The registry protocol of ``nodeload serve``, spoken by hand against two real containerds.

Uploads (monolithic, chunked, resumed, cancelled), wrong digests, unknown blobs and manifests,
credentials, loopback only, and nodes that disagree about what they lack.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import nodeload
from nodeload.errors import UsageError
from nodeload.nodes.spec import NodeSpec
from nodeload.registry.server import ServeOptions, loopback, serve_async
from tests.helpers.oci import ImageSpec, LayoutInfo, write_layout
from tests.integration.cli import content, images
from tests.integration.conftest import _running_containerd
from tests.integration.nodes import Containerd

pytestmark = pytest.mark.integration


class Registry:
    """``nodeload serve`` (the library call) on its own event loop thread, without a command."""

    def __init__(self, nodes: list[NodeSpec], namespace: str = "k8s.io") -> None:
        self.namespace = namespace
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.address, self.env = "", {}
        self._task: asyncio.Task[Any] | None = None
        self._thread = threading.Thread(target=self._run, args=(nodes,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the registry did not start"

    def _run(self, nodes: list[NodeSpec]) -> None:
        asyncio.set_event_loop(self.loop)

        def ready(address: str, env: dict[str, str]) -> None:
            self.address, self.env = address, env
            self._ready.set()

        options = ServeOptions(namespace=self.namespace)
        self._task = self.loop.create_task(serve_async(nodes, options, None, ready=ready))
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self.loop.run_until_complete(self._task)

    @property
    def auth(self) -> tuple[str, str]:
        """The per-run login, as the credentials file gives it to clients."""
        entry = json.loads(Path(self.env["REGISTRY_AUTH_FILE"]).read_text())["auths"][self.address]
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, password

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("auth", self.auth)
        return requests.request(method, self.url(path), timeout=30, **kwargs)

    def stop(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)


@pytest.fixture()
def two_nodes() -> Iterator[tuple[Containerd, Containerd]]:
    with _running_containerd() as a, _running_containerd() as b:
        yield a, b


@pytest.fixture()
def registry(two_nodes: tuple[Containerd, Containerd]) -> Iterator[Registry]:
    a, b = two_nodes
    nodes = [
        NodeSpec("a", reach="local", sockets=(str(a.socket),)),
        NodeSpec("b", reach="local", sockets=(str(b.socket),)),
    ]
    server = Registry(nodes)
    yield server
    server.stop()


def local_node(name: str, containerd: Containerd) -> NodeSpec:
    """A node reached on this machine, on its containerd's socket."""
    return NodeSpec(name, reach="local", sockets=(str(containerd.socket),))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blobs(node: Containerd) -> set[str]:
    return set(node.ctr("content", "ls", "--quiet").split())


def _error_code(response: requests.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def test_monolithic_upload_reaches_every_node(
    registry: Registry, two_nodes: tuple[Containerd, Containerd]
) -> None:
    data = os.urandom(300_000)
    digest = _digest(data)
    assert registry.request("HEAD", f"/v2/app/blobs/{digest}").status_code == 404
    created = registry.request("POST", f"/v2/app/blobs/uploads/?digest={digest}", data=data)
    assert created.status_code == 201 and created.headers["Docker-Content-Digest"] == digest
    head = registry.request("HEAD", f"/v2/app/blobs/{digest}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    assert registry.request("GET", f"/v2/app/blobs/{digest}").content == data
    assert all(digest in _blobs(node) for node in two_nodes)


def test_chunked_upload_with_a_resume_and_status(
    registry: Registry, two_nodes: tuple[Containerd, Containerd]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = _digest(data)
    started = registry.request("POST", "/v2/team/app/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    first = registry.request("PATCH", location, data=data[:1_000_000], headers={"Content-Range": "0-999999"})
    assert first.status_code == 202 and first.headers["Range"] == "0-999999"
    wrong = registry.request("PATCH", location, data=data[5:10], headers={"Content-Range": "5-9"})
    assert wrong.status_code == 416 and wrong.headers["Range"] == "0-999999"  # where to resume
    status = registry.request("GET", location)
    assert status.status_code == 204 and status.headers["Range"] == "0-999999"
    second = registry.request(
        "PATCH", location, data=data[1_000_000:], headers={"Content-Range": f"1000000-{len(data) - 1}"}
    )
    assert second.status_code == 202
    done = registry.request("PUT", f"{location}?digest={digest}")
    assert done.status_code == 201
    assert all(digest in _blobs(node) for node in two_nodes)


def test_a_body_sent_a_few_kib_at_a_time_lands_whole(
    registry: Registry, two_nodes: tuple[Containerd, Containerd]
) -> None:
    """docker push streams what it compresses in small chunks (chunked transfer encoding)."""
    data = os.urandom(2 * 1024 * 1024 + 4321)
    digest = _digest(data)

    def trickle() -> Iterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    location = registry.request("POST", "/v2/app/blobs/uploads/").headers["Location"]
    patched = registry.request("PATCH", location, data=trickle())
    assert patched.status_code == 202 and patched.headers["Range"] == f"0-{len(data) - 1}"
    assert registry.request("PUT", f"{location}?digest={digest}").status_code == 201
    assert all(digest in _blobs(node) for node in two_nodes)
    assert registry.request("GET", f"/v2/app/blobs/{digest}").content == data


def test_wrong_digest_is_refused_and_nothing_is_kept(
    registry: Registry, two_nodes: tuple[Containerd, Containerd]
) -> None:
    data = os.urandom(50_000)
    started = registry.request("POST", "/v2/app/blobs/uploads/")
    registry.request("PATCH", started.headers["Location"], data=data)
    claimed = _digest(b"something else")
    refused = registry.request("PUT", f"{started.headers['Location']}?digest={claimed}")
    assert refused.status_code == 400 and _error_code(refused) == "DIGEST_INVALID"
    for node in two_nodes:
        assert _digest(data) not in _blobs(node) and claimed not in _blobs(node)
        assert node.ctr("content", "active").strip().splitlines()[1:] == []


def test_cancelled_upload_is_gone(registry: Registry, two_nodes: tuple[Containerd, Containerd]) -> None:
    started = registry.request("POST", "/v2/app/blobs/uploads/")
    location = started.headers["Location"]
    registry.request("PATCH", location, data=os.urandom(10_000))
    assert registry.request("DELETE", location).status_code == 204
    gone = registry.request("PATCH", location, data=b"more")
    assert gone.status_code == 404 and _error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
    for node in two_nodes:
        assert node.ctr("content", "active").strip().splitlines()[1:] == []


def test_unknown_things_are_404_with_oci_errors(registry: Registry) -> None:
    missing = _digest(b"nope")
    blob = registry.request("GET", f"/v2/app/blobs/{missing}")
    assert blob.status_code == 404 and _error_code(blob) == "BLOB_UNKNOWN"
    manifest = registry.request("GET", "/v2/app/manifests/v9")
    assert manifest.status_code == 404 and _error_code(manifest) == "MANIFEST_UNKNOWN"
    bad_name = registry.request("GET", "/v2/App/manifests/v1")
    assert bad_name.status_code == 400 and _error_code(bad_name) == "NAME_INVALID"
    bad_digest = registry.request("HEAD", "/v2/app/blobs/md5:abc")
    assert bad_digest.status_code == 400


def test_credentials_are_required(registry: Registry) -> None:
    for auth in (None, ("nodeload", "wrong")):
        refused = requests.get(registry.url("/v2/"), auth=auth, timeout=10)
        assert refused.status_code == 401 and _error_code(refused) == "UNAUTHORIZED"
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert registry.request("GET", "/v2/").status_code == 200
    assert Path(registry.env["REGISTRY_AUTH_FILE"]).stat().st_mode & 0o777 == 0o600


def test_listens_on_loopback_only(registry: Registry) -> None:
    host, _, port = registry.address.rpartition(":")
    assert host == "127.0.0.1"
    others = [
        ip
        for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        if ":" not in ip
    ]
    for ip in others:
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((ip, int(port))) != 0, f"reachable on {ip}"
    for listen in ("0.0.0.0:5000", "10.1.2.3:80", "example.com:80"):
        with pytest.raises(UsageError, match=r"loopback only|expected 127\.0\.0\.1"):
            loopback(listen)


def test_manifest_by_tag_makes_an_image_on_each_node(
    registry: Registry, two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    info = write_layout(tmp_path / "img", seed=77)
    image = info.images[0]
    for digest in [image.config.digest, *(layer.digest for layer in image.layers)]:
        data = info.blobs[digest]
        assert (
            registry.request("POST", f"/v2/team/app/blobs/uploads/?digest={digest}", data=data).status_code
            == 201
        )
    manifest = info.blobs[image.manifest.digest]
    headers = {"Content-Type": image.manifest.media_type}
    put = registry.request("PUT", "/v2/team/app/manifests/v1", data=manifest, headers=headers)
    assert put.status_code == 201 and put.headers["Docker-Content-Digest"] == image.manifest.digest
    for node in two_nodes:
        assert "docker.io/team/app:v1" in node.ctr("images", "ls", "--quiet").split()
    by_tag = registry.request("GET", "/v2/team/app/manifests/v1")
    by_digest = registry.request("GET", f"/v2/team/app/manifests/{image.manifest.digest}")
    assert by_tag.content == by_digest.content == manifest
    assert by_tag.headers["Content-Type"] == image.manifest.media_type


def _push_image(registry: Registry, info: LayoutInfo, tag: str) -> None:
    image = info.images[0]
    for digest in [image.config.digest, *(layer.digest for layer in image.layers)]:
        posted = registry.request("POST", f"/v2/app/blobs/uploads/?digest={digest}", data=info.blobs[digest])
        assert posted.status_code in (201, 202)
    manifest = info.blobs[image.manifest.digest]
    headers = {"Content-Type": image.manifest.media_type}
    assert (
        registry.request("PUT", f"/v2/app/manifests/{tag}", data=manifest, headers=headers).status_code == 201
    )


def _serving_after_an_earlier_run(
    nodes: tuple[Containerd, Containerd], info: LayoutInfo, tag: str
) -> Registry:
    """A serve run (namespace default) on nodes where an earlier, finished run left ``info`` as ``tag``."""
    specs = [local_node("a", nodes[0]), local_node("b", nodes[1])]
    earlier = Registry(specs, namespace="default")
    _push_image(earlier, info, tag)
    earlier.stop()
    return Registry(specs, namespace="default")


def test_a_replaced_image_is_collectable_while_serve_runs(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    """serve holds one lease for its whole run (what it receives stays until images name it); the
    image a tag pointed at before the run, pinned while its replacement was planned, must not
    stay pinned in that lease once the replacement is named."""
    old = write_layout(tmp_path / "old", [ImageSpec((181, 182, 184))], ref="v1")
    new = write_layout(tmp_path / "new", [ImageSpec((181, 182, 183))], ref="v1")  # two layers shared
    server = _serving_after_an_earlier_run(two_nodes, old, "dev")
    try:
        _push_image(server, new, "dev")  # the same tag: the old image is replaced
        for node in two_nodes:
            node.collect_garbage("default")
            held = content(node, "default")
            assert old.images[0].layers[2].digest not in held  # only the old image had it
            assert {d.digest for d in new.images[0].layers} | {new.images[0].config.digest} <= held
    finally:
        server.stop()


def test_an_upload_of_a_blob_the_node_holds_is_kept_until_an_image_names_it(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    """A commit that finds the blob already there does not put it in the lease by itself: serve
    does, so the image that named it going away (kubelet's GC) cannot take it mid-push."""
    old = write_layout(tmp_path / "old", [ImageSpec((191, 192))], ref="v1")
    server = _serving_after_an_earlier_run(two_nodes, old, "dev")
    try:
        layer = old.images[0].layers[0].digest
        location = server.request("POST", "/v2/app/blobs/uploads/").headers["Location"]
        assert server.request("PUT", f"{location}?digest={layer}", data=old.blobs[layer]).status_code == 201
        for node in two_nodes:
            node.ctr("images", "rm", "--sync", "docker.io/library/app:dev", namespace="default")
            assert layer in content(node, "default")
        _push_image(server, old, "again")  # the image is whole again, from what the lease kept
        for node in two_nodes:
            assert "docker.io/library/app:again" in images(node, "default")
    finally:
        server.stop()


_CLIENT = """
import base64, json, os, sys, requests
address = os.environ["NODELOAD_REGISTRY"]
entry = json.load(open(os.environ["REGISTRY_AUTH_FILE"]))["auths"][address]
auth = tuple(base64.b64decode(entry["auth"]).decode().split(":", 1))
data = open(sys.argv[1], "rb").read()
digest = sys.argv[2]
url = f"http://{address}/v2/app/blobs"
assert requests.head(f"{url}/{digest}", auth=auth).status_code == 404
location = requests.post(f"{url}/uploads/", auth=auth).headers["Location"]
requests.patch(f"http://{address}{location}", data=data, auth=auth).raise_for_status()
assert requests.put(f"http://{address}{location}?digest={digest}", auth=auth).status_code == 201
assert requests.head(f"{url}/{digest}", auth=auth).status_code == 200
"""


def test_nodes_that_disagree_get_only_what_each_lacks(tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", seed=78)
    layer = info.images[0].layers[0]
    (tmp_path / "blob").write_bytes(info.blobs[layer.digest])
    (tmp_path / "client.py").write_text(_CLIENT)
    with _running_containerd() as a, _running_containerd() as b:
        options = nodeload.PushOptions.of(name="example.com/seed:v1", socket=str(a.socket))
        [seeded] = nodeload.push(f"oci:{info.path}", [NodeSpec("a", reach="local")], options)
        assert seeded.ok  # a holds the layer (referenced by an image), b does not
        nodes = [local_node("a", a), local_node("b", b)]
        command = [sys.executable, str(tmp_path / "client.py"), str(tmp_path / "blob"), layer.digest]
        outcome = asyncio.run(serve_async(nodes, ServeOptions(), command))
    assert outcome.command_status == 0 and outcome.nodes_ok
    received = {s.name: s.bytes_received for s in outcome.sessions}
    assert received == {"a": 0, "b": layer.size}  # a had it: not one byte went to it
