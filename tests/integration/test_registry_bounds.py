"""``nodeload serve`` is bounded, and a bad manifest is the client's error, not a node's.

Each test speaks the registry protocol to the library's endpoint over two real containerds
(or runs the real CLI): indexes that name the same documents over and over or nest too deep,
manifests that name missing or mis-sized blobs, request bodies that trickle, too many uploads,
HEAD answers piling up, and the per-run login directory a killed run leaves behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import nodeload
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import NullProgress
from nodeload.registry.limits import Limits
from nodeload.registry.server import Endpoint, ServeOptions, open_endpoint, serve_async
from tests.helpers.oci import LayoutInfo, write_layout
from tests.integration.cli import Cli, images
from tests.integration.conftest import _running_containerd
from tests.integration.nodes import Containerd, Sshd

pytestmark = pytest.mark.integration

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
AMD64 = {"os": "linux", "architecture": "amd64"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _index(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}).encode()


def _entry(data: bytes, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data), "platform": AMD64}


@dataclass
class Client:
    """An HTTP client of a running endpoint, logged in with the run's credentials."""

    endpoint: Endpoint
    http: aiohttp.ClientSession

    @property
    def node_errors(self) -> list[str]:
        return [error for session in self.endpoint.sessions for error in session.errors]

    async def upload(self, data: bytes) -> str:
        """A blob, uploaded monolithically; its digest."""
        digest = _digest(data)
        async with self.http.post(f"/v2/app/blobs/uploads/?digest={digest}", data=data) as response:
            assert response.status == 201, await response.text()
        return digest

    async def push_image(self, info: LayoutInfo) -> None:
        """The blobs of ``info``'s image (config, layers) and its manifest, as a blob."""
        image = info.images[0]
        for digest in [image.config.digest, *(layer.digest for layer in image.layers), image.manifest.digest]:
            await self.upload(info.blobs[digest])

    async def put_manifest(self, reference: str, data: bytes, media_type: str) -> tuple[int, dict[str, Any]]:
        """PUT a manifest; the status and the first OCI error (empty on success)."""
        headers = {"Content-Type": media_type}
        async with self.http.put(f"/v2/app/manifests/{reference}", data=data, headers=headers) as response:
            body = await response.json() if response.status >= 400 else {}
            return response.status, (body.get("errors") or [{}])[0]


@contextlib.asynccontextmanager
async def endpoint(nodes: list[NodeSpec], limits: Limits | None = None) -> AsyncIterator[Client]:
    """The library's endpoint over ``nodes`` and a client of it."""
    options = ServeOptions(namespace="k8s.io", limits=limits or Limits())
    async with open_endpoint(nodes, options, NullProgress()) as served:
        login = {"Authorization": f"Basic {served.credentials.basic}"}
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(f"http://{served.address}", headers=login, timeout=timeout) as http:
            yield Client(served, http)


@pytest.fixture()
def two_nodes() -> Iterator[tuple[Containerd, Containerd]]:
    with _running_containerd() as a, _running_containerd() as b:
        yield a, b


def _specs(nodes: tuple[Containerd, ...]) -> list[NodeSpec]:
    return [NodeSpec(f"n{i}", reach="local", sockets=(str(n.socket),)) for i, n in enumerate(nodes)]


def _active_ingests(node: Containerd) -> list[str]:
    return node.ctr("content", "active").strip().splitlines()[1:]


async def _blobs(node: Containerd) -> set[str]:
    return set((await asyncio.to_thread(node.ctr, "content", "ls", "--quiet")).split())


# -- what a manifest names: read once, bounded ------------------------------------------------------


def test_an_index_naming_one_manifest_90_000_times_is_read_once(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    """A 63 KB index of 300 indexes of 300 manifests used to cost 180,300 reads of each node."""
    info = write_layout(tmp_path / "img", seed=301)
    manifest = info.blobs[info.images[0].manifest.digest]
    inner = _index(*[_entry(manifest)] * 300)
    outer = _index(*[_entry(inner, OCI_INDEX)] * 300)

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes)) as client:
            await client.push_image(info)
            await client.upload(inner)
            started = time.monotonic()
            status, error = await client.put_manifest("fanned", outer, OCI_INDEX)
            assert status == 201, error
            assert time.monotonic() - started < 20
            assert client.node_errors == []

    asyncio.run(scenario())
    for node in two_nodes:
        assert "docker.io/library/app:fanned" in images(node, "k8s.io")


def test_an_index_naming_more_descriptors_than_the_bound_is_refused(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    info = write_layout(tmp_path / "img", seed=302)
    manifest = info.blobs[info.images[0].manifest.digest]

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes)) as client:
            await client.push_image(info)
            fits = _index(*[_entry(manifest)] * 999)  # and the manifest's config: 1000
            assert (await client.put_manifest("fits", fits, OCI_INDEX))[0] == 201
            status, error = await client.put_manifest("many", _index(*[_entry(manifest)] * 1000), OCI_INDEX)
            assert status == 400 and error["code"] == "MANIFEST_INVALID"
            assert "more than 1000" in error["message"]
            assert client.node_errors == []

    asyncio.run(scenario())
    for node in two_nodes:
        assert "docker.io/library/app:many" not in images(node, "k8s.io")


def test_indexes_nested_deeper_than_the_push_path_resolves_are_refused(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    info = write_layout(tmp_path / "img", seed=303)
    nested = [info.blobs[info.images[0].manifest.digest]]
    for _ in range(4):
        media_type = OCI_MANIFEST if len(nested) == 1 else OCI_INDEX
        nested.append(_index(_entry(nested[-1], media_type)))

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes)) as client:
            await client.push_image(info)
            for document in nested[1:-1]:
                await client.upload(document)
            # Three indexes above the manifest, as graph.resolve walks them: fine.
            assert (await client.put_manifest("deep", nested[3], OCI_INDEX))[0] == 201
            status, error = await client.put_manifest("deeper", nested[4], OCI_INDEX)
            assert status == 400 and error["code"] == "MANIFEST_INVALID"
            assert "nested too deeply (at most 3 levels of index" in error["message"]
            assert client.node_errors == []

    asyncio.run(scenario())


# -- a bad manifest is the client's error -------------------------------------------------------------


def _manifest(config: dict[str, Any], layers: list[dict[str, Any]]) -> bytes:
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    return json.dumps(document).encode()


def _broken(info: LayoutInfo, case: str) -> tuple[bytes, str]:
    """A manifest (or index) for ``info``'s blobs that is wrong in the way ``case`` says."""
    image = info.images[0]
    config, layers = image.config.to_json(), [layer.to_json() for layer in image.layers]
    if case == "config never pushed":
        missing = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        return _manifest({**config, "digest": _digest(missing), "size": len(missing)}, layers), OCI_MANIFEST
    if case == "layer never pushed":
        never = {**layers[0], "digest": _digest(b"never"), "size": 5}
        return _manifest(config, [never, *layers[1:]]), OCI_MANIFEST
    if case == "layer of another size":
        longer = {**layers[0], "size": layers[0]["size"] + 1}
        return _manifest(config, [longer, *layers[1:]]), OCI_MANIFEST
    if case == "child that is not json":
        return _index(_entry(info.blobs[image.layers[0].digest])), OCI_INDEX
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("config never pushed", "MANIFEST_BLOB_UNKNOWN"),
        ("layer never pushed", "MANIFEST_BLOB_UNKNOWN"),
        ("layer of another size", "SIZE_INVALID"),
        ("child that is not json", "MANIFEST_INVALID"),
    ],
)
def test_a_bad_manifest_is_a_400_and_fails_no_node(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path, case: str, code: str
) -> None:
    info = write_layout(tmp_path / "img", seed=304)
    document, media_type = _broken(info, case)

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes)) as client:
            await client.push_image(info)
            status, error = await client.put_manifest("bad", document, media_type)
            assert (status, error.get("code")) == (400, code), error
            assert client.node_errors == []  # serve would not exit 1 for it
            manifest = info.blobs[info.images[0].manifest.digest]
            assert (await client.put_manifest("good", manifest, OCI_MANIFEST))[0] == 201

    asyncio.run(scenario())


_BAD_MANIFEST_CLIENT = """
import base64, json, os, sys, requests
address = os.environ["NODELOAD_REGISTRY"]
entry = json.load(open(os.environ["REGISTRY_AUTH_FILE"]))["auths"][address]
auth = tuple(base64.b64decode(entry["auth"]).decode().split(":", 1))
headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
put = requests.put(f"http://{address}/v2/app/manifests/v1", data=open(sys.argv[1], "rb").read(),
                   headers=headers, auth=auth)
sys.exit(0 if put.status_code == 400 and put.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN" else 9)
"""


def test_serve_reports_its_nodes_ok_after_a_bad_manifest(
    two_nodes: tuple[Containerd, Containerd], tmp_path: Path
) -> None:
    """The wrapped command gets its 400 and fails on its own; the nodes did nothing wrong."""
    info = write_layout(tmp_path / "img", seed=305)
    document, _ = _broken(info, "config never pushed")
    (tmp_path / "manifest.json").write_bytes(document)
    (tmp_path / "client.py").write_text(_BAD_MANIFEST_CLIENT)
    command = [sys.executable, str(tmp_path / "client.py"), str(tmp_path / "manifest.json")]
    outcome = asyncio.run(serve_async(_specs(two_nodes), ServeOptions(), command))
    assert outcome.command_status == 0
    assert outcome.nodes_ok, [s.errors for s in outcome.sessions]


# -- request bodies that stall ------------------------------------------------------------------------


async def _trickle(
    client: Client,
    method: str,
    path: str,
    length: int,
    sent: bytes,
    *,
    every: float,
    burst: bytes = b"",
    extra: str = "",
) -> tuple[int, dict[str, str], dict[str, Any], float]:
    """Send a request head, ``burst``, then ``sent`` a byte every ``every`` seconds (``length``
    is promised), from a raw socket; the answer's status, headers, JSON body and how long it took."""
    host, _, port = client.endpoint.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {client.endpoint.address}\r\n"
        f"Authorization: Basic {client.endpoint.credentials.basic}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    )
    started = time.monotonic()
    writer.write(head.encode() + burst)

    async def send() -> None:
        for byte in sent:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
        await asyncio.sleep(3600)  # and then nothing

    sending = asyncio.ensure_future(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 15)
        elapsed = time.monotonic() - started
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        sending.cancel()
        writer.close()
    return int(status_line.split()[1]), headers, json.loads(body or b"{}"), elapsed


def test_a_trickling_upload_is_cut_and_can_be_resumed(
    two_nodes: tuple[Containerd, Containerd],
) -> None:
    data = os.urandom(200_000)
    limits = Limits(stall_seconds=1.0, stall_bytes=64 * 1024)

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes), limits) as client:
            async with client.http.post("/v2/app/blobs/uploads/") as started:
                location = started.headers["Location"]
            first = data[:100_000]
            async with client.http.patch(location, data=first) as patched:
                assert patched.status == 202
            # One byte every 0.2 s: never idle, but far below 64 KiB per second of waiting.
            status, headers, body, elapsed = await _trickle(
                client, "PATCH", location, len(data) - len(first), data[100_000:100_050], every=0.2
            )
            assert status == 408 and body["errors"][0]["code"] == "BLOB_UPLOAD_INVALID", body
            assert elapsed < 5
            kept = int(headers["range"].split("-")[1]) + 1
            assert 100_000 <= kept <= 100_050 and headers["location"] == location
            async with client.http.get(location) as status_now:
                assert status_now.headers["Range"] == headers["range"]
            async with client.http.patch(location, data=data[kept:]) as resumed:
                assert resumed.status == 202
            async with client.http.put(f"{location}?digest={_digest(data)}") as done:
                assert done.status == 201, await done.text()
            assert client.node_errors == []
            for node in two_nodes:  # while serve's lease keeps it
                assert _digest(data) in await _blobs(node)

    asyncio.run(scenario())


def test_a_stalled_monolithic_upload_and_manifest_are_cut_and_nothing_is_kept(
    two_nodes: tuple[Containerd, Containerd],
) -> None:
    limits = Limits(stall_seconds=1.0)

    async def scenario() -> None:
        async with endpoint(_specs(two_nodes), limits) as client:
            data = os.urandom(3 << 20)
            path = f"/v2/app/blobs/uploads/?digest={_digest(data)}"
            # More than a piece (1 MiB) arrives at once: the nodes' ingests are open when it stalls.
            status, _, body, elapsed = await _trickle(
                client, "POST", path, len(data), b"", every=0, burst=data[: 3 << 19]
            )
            assert status == 408 and body["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
            assert elapsed < 5
            extra = f"Content-Type: {OCI_MANIFEST}\r\n"
            status, _, body, _ = await _trickle(
                client, "PUT", "/v2/app/manifests/v1", 500, b'{"schema', every=0.1, extra=extra
            )
            assert status == 408 and body["errors"][0]["code"] == "MANIFEST_INVALID"

    asyncio.run(scenario())
    for node in two_nodes:
        assert _active_ingests(node) == []  # the cut upload had no location to resume at


# -- uploads and HEAD answers do not pile up -----------------------------------------------------------


def test_open_uploads_are_bounded_and_abandoned_ones_expire(two_nodes: tuple[Containerd, Containerd]) -> None:
    async def scenario() -> None:
        async with endpoint(_specs(two_nodes), Limits(uploads=3, stall_seconds=1.0)) as client:
            locations = []
            for _ in range(3):
                async with client.http.post("/v2/app/blobs/uploads/") as started:
                    assert started.status == 202
                    locations.append(started.headers["Location"])
                async with client.http.patch(locations[-1], data=b"some bytes") as patched:
                    assert patched.status == 202
            async with client.http.post("/v2/app/blobs/uploads/") as refused:
                assert refused.status == 429
                assert (await refused.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert int(refused.headers["Retry-After"]) >= 1
            async with client.http.delete(locations.pop()) as cancelled:
                assert cancelled.status == 204
            async with client.http.post("/v2/app/blobs/uploads/") as started:
                assert started.status == 202
            await asyncio.sleep(1.2)  # nobody touches the uploads: abandoned, dropped when room is needed
            async with client.http.post("/v2/app/blobs/uploads/") as started:
                assert started.status == 202
            async with client.http.get(locations[0]) as gone:
                assert gone.status == 404

    asyncio.run(scenario())


def test_head_answers_are_bounded_forgetting_the_oldest(tmp_path: Path) -> None:
    """A forgotten answer costs at most a blob sent again to a node that had it."""
    info = write_layout(tmp_path / "img", seed=306)
    layer = info.images[0].layers[0]
    data = info.blobs[layer.digest]
    with _running_containerd() as a, _running_containerd() as b:
        options = nodeload.PushOptions.of(name="example.com/seed:v1", socket=str(a.socket))
        [seeded] = nodeload.push(f"oci:{info.path}", [NodeSpec("a", reach="local")], options)
        assert seeded.ok  # a holds the layer, b does not

        async def scenario() -> dict[str, int]:
            async with endpoint(_specs((a, b)), Limits(head_records=2)) as client:
                async with client.http.head(f"/v2/app/blobs/{layer.digest}") as head:
                    assert head.status == 404  # a has it, b lacks it: an upload would be kept locally
                for i in range(2):  # two later answers push that one out
                    async with client.http.head(f"/v2/app/blobs/{_digest(bytes([i]))}") as head:
                        assert head.status == 404
                await client.upload(data)
                for node in (a, b):
                    assert layer.digest in await _blobs(node)
                return {s.name: s.bytes_received for s in client.endpoint.sessions}

        received = asyncio.run(scenario())
        assert received == {"n0": len(data), "n1": len(data)}  # streamed to both, as if never asked


# -- what killed runs leave -------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_serve_sweeps_the_login_directory_a_killed_run_left(
    containerd: Containerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever reaches the nodes (here: a local socket, no SSH transport to sweep on its way)."""
    stale = tmp_path / f"nodeload-serve-auth-{_dead_pid()}-x"
    (stale / "docker").mkdir(parents=True)
    (stale / "auth.json").write_text("{}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    outcome = asyncio.run(serve_async(_specs((containerd,)), ServeOptions(), ["true"]))
    assert outcome.command_status == 0
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("nodeload-serve-auth-")] == []


def test_the_cli_sweeps_the_login_directory_a_killed_run_left(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    stale = tmp_path / f"nodeload-serve-auth-{_dead_pid()}-x"
    (stale / "docker").mkdir(parents=True)
    argv = ["serve", "--node", sshd.node, "--containerd-socket", str(containerd.socket)]
    argv += ["-i", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts), "--", "true"]
    run = cli.run(*argv, env={"TMPDIR": str(tmp_path)})
    assert run.code == 0, run.err
    assert not stale.exists()
