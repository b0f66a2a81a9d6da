"""``nodeload images`` and ``nodeload rm`` through the real CLI, against real node containers
(OpenSSH + containerd + CRI): what they say is checked against the node's own view (``ctr``,
the content store's files), never against nodeload's other output alone."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from nodeload.sandbox import NodeContainer, Sandbox
from tests.e2e.pushing import CONTENT_ROOT, content_sizes, image_names, nodeload, push_json

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """Two nodes of this module's own: the images these tests leave (and remove) would change
    what later tests on the session's nodes find there and send."""
    with Sandbox(2, image=node_image, client=docker_client) as sb:
        yield sb


def _wait_for_record(node: NodeContainer, record: str, seconds: float = 20) -> None:
    """CRI writes its ``sha256:<ID>`` record from containerd's events, after it answers for the
    image: wait for it, so the next push finds the state this test is about."""
    deadline = time.monotonic() + seconds
    while not any(line.split()[0] == record for line in _ctr_lines(node)):
        assert time.monotonic() < deadline, f"CRI never wrote {record} on {node}"
        time.sleep(0.2)


def _cli(sandbox: Sandbox, verb: str, *args: str, aliases: tuple[str, ...] = ()) -> list[str]:
    nodes = [a for alias in aliases or tuple(sandbox.aliases) for a in ("--node", alias)]
    return [verb, *args, "-F", str(sandbox.ssh_config_path), *nodes]


def _json(sandbox: Sandbox, verb: str, *args: str, aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    proc = nodeload(*_cli(sandbox, verb, *args, "--json", aliases=aliases), check=False)
    assert proc.returncode in (0, 1), proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    document["exit"] = proc.returncode
    return document


def _blob_size(node: NodeContainer, digest: str) -> int:
    return int(node.check_output(["stat", "-c", "%s", f"{CONTENT_ROOT}/{digest.removeprefix('sha256:')}"]))


def _image_blobs(node: NodeContainer, manifest: str) -> list[str]:
    """The manifest, config and layers, read from the node's content store by hand."""
    body = json.loads(node.check_output(["cat", f"{CONTENT_ROOT}/{manifest.removeprefix('sha256:')}"]))
    return [manifest, body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]


def _ctr_lines(node: NodeContainer) -> list[str]:
    return [
        line for line in node.check_output(["ctr", "-n", "k8s.io", "images", "ls"]).splitlines()[1:] if line
    ]


def _ctr_target(node: NodeContainer, name: str) -> str:
    """The record's target digest as ``ctr images ls`` prints it."""
    for line in _ctr_lines(node):
        fields = line.split()
        if fields[0] == name:
            return fields[2]
    raise AssertionError(f"{name} is not in ctr images ls")


def test_images_marks_the_node_that_holds_the_old_version(
    sandbox: Sandbox, app_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    name = f"e2e/images-{secrets.token_hex(3)}:dev"
    full = f"docker.io/{name}"
    v1_id, v2_id = (docker_client.images.get(app_images[v]).id for v in ("v1", "v2"))
    push_json(sandbox, app_images["v1"], "node-1", "node-2", extra=("--name", name))
    _wait_for_record(sandbox.node("node-1"), f"sha256:{v1_id.removeprefix('sha256:')}")
    [moved] = push_json(sandbox, app_images["v2"], "node-1", extra=("--name", name))

    report = _json(sandbox, "images", name)
    assert report["exit"] == 0
    # The shape the README documents.
    assert set(report) - {"exit"} == {"namespace", "error", "nodes", "images"}
    assert set(report["nodes"][0]) == {"node", "status", "error", "snapshotter"}
    assert set(report["images"][0]) == {"name", "image_id", "differing_nodes", "nodes"}
    assert set(report["images"][0]["nodes"][0]) == {
        *("node", "held", "differs", "target", "target_media_type", "manifest", "image_id"),
        *("size", "complete", "unpacked", "cri", "updated_at", "problem"),
    }
    assert [n["status"] for n in report["nodes"]] == ["ok", "ok"]
    [view] = report["images"]
    assert view["name"] == full
    assert view["image_id"] == v2_id  # the newest copy: the push that moved the tag
    assert view["differing_nodes"] == ["node-2"]
    one, two = view["nodes"]
    assert (one["node"], one["held"], one["differs"], one["image_id"]) == ("node-1", True, False, v2_id)
    assert (two["node"], two["held"], two["differs"], two["image_id"]) == ("node-2", True, True, v1_id)
    for copy, alias in ((one, "node-1"), (two, "node-2")):
        node = sandbox.node(alias)
        assert copy["target"] == copy["manifest"] == _ctr_target(node, full)
        # The size is the bytes of the image's blobs on the node, as its own files say.
        assert copy["size"] == sum(_blob_size(node, d) for d in _image_blobs(node, copy["manifest"]))
        assert copy["complete"] is True
        assert copy["unpacked"] is True and copy["cri"] is True  # pushed into k8s.io
    assert one["manifest"] == moved["digest"]

    table = nodeload(*_cli(sandbox, "images", name)).stdout
    assert f"node-2 holds another ID than {v2_id.removeprefix('sha256:')[:12]}" in table

    # Without IMAGE: every image of the namespace; CRI's sha256: ID records only where no name
    # points at the same target any more (node-1's record of v1, left behind when the tag moved).
    records = {line.split()[0]: line.split()[2] for line in _ctr_lines(sandbox.node("node-1"))}
    everything = _json(sandbox, "images", aliases=("node-1",))
    listed = {view["name"]: view["nodes"][0] for view in everything["images"]}
    assert full in listed
    named_targets = {t for n, t in records.items() if not n.startswith("sha256:")}
    orphans = {n for n, t in records.items() if n.startswith("sha256:") and t not in named_targets}
    assert {n for n in listed if n.startswith("sha256:")} == orphans
    assert f"sha256:{v1_id.removeprefix('sha256:')}" in orphans


def test_images_reports_the_nodes_it_reached_and_fails_for_the_one_it_could_not(
    sandbox: Sandbox, app_images: dict[str, str]
) -> None:
    name = f"e2e/images-{secrets.token_hex(3)}:dev"
    push_json(sandbox, app_images["v1"], "node-1", extra=("--name", name))
    report = _json(sandbox, "images", name, aliases=("node-1", "root@127.0.0.1:1"))
    assert report["exit"] == 1
    ok, failed = report["nodes"]
    assert (ok["status"], failed["status"]) == ("ok", "failed")
    assert failed["error"]
    [view] = report["images"]
    assert [(h["node"], h["held"]) for h in view["nodes"]] == [("node-1", True)]


def test_rm_frees_what_only_the_image_held_and_cri_forgets_it(
    node_sandbox: Sandbox, app_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    node = node_sandbox.node("node-1")
    push_json(node_sandbox, app_images["v1"])
    push_json(node_sandbox, app_images["v2"])
    v2, v2_id = "docker.io/nodeload-e2e/app:v2", docker_client.images.get(app_images["v2"]).id
    cri_record = f"sha256:{v2_id.removeprefix('sha256:')}"
    before = content_sizes(node)
    assert cri_record in image_names(node)

    dry = _json(node_sandbox, "rm", app_images["v2"], "--dry-run")
    [removal] = dry["nodes"][0]["images"]
    assert (removal["status"], removal["image_id"]) == ("would-remove", v2_id)
    assert sorted(removal["records"]) == sorted([v2, cri_record])
    assert dry["nodes"][0]["freed_bytes"] is None
    assert v2 in image_names(node)

    done = _json(node_sandbox, "rm", app_images["v2"])
    assert done["exit"] == 0
    assert set(done) - {"exit"} == {"dry_run", "namespace", "error", "nodes"}
    [result] = done["nodes"]
    assert set(result) == {"node", "status", "error", "freed_bytes", "images"}
    assert set(result["images"][0]) == {"name", "status", "image_id", "records", "used_by"}
    assert result["images"][0]["status"] == "removed"
    names = image_names(node)
    assert v2 not in names and cri_record not in names
    assert "docker.io/nodeload-e2e/app:v1" in names  # the other version is untouched
    after = content_sizes(node)
    gone = {d: s for d, s in before.items() if d not in after}
    # The layer, config and manifest only v2 had: what the node's disk lost is what rm said.
    assert len(gone) == 3
    assert result["freed_bytes"] == sum(gone.values()) > 3 * 1024 * 1024
    assert _json(node_sandbox, "images", app_images["v2"])["images"][0]["nodes"][0]["held"] is False

    again = _json(node_sandbox, "rm", app_images["v2"])
    assert again["exit"] == 0 and again["nodes"][0]["images"][0]["status"] == "absent"
    assert again["nodes"][0]["freed_bytes"] == 0


def test_rm_refuses_an_image_a_container_uses_unless_forced(
    node_sandbox: Sandbox, app_images: dict[str, str]
) -> None:
    node = node_sandbox.node("node-1")
    push_json(node_sandbox, app_images["v1"])
    name = "docker.io/nodeload-e2e/app:v1"
    node.check_output(["ctr", "-n", "k8s.io", "containers", "create", name, "uses-v1"])

    refused = _json(node_sandbox, "rm", app_images["v1"])
    assert refused["exit"] == 1
    [result] = refused["nodes"]
    assert result["status"] == "refused"
    [removal] = result["images"]
    assert removal["status"] == "refused"
    assert [(u["kind"], u["id"]) for u in removal["used_by"]] == [("containerd", "uses-v1")]
    assert name in image_names(node) and result["freed_bytes"] == 0
    proc = nodeload(*_cli(node_sandbox, "rm", app_images["v1"]), check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr

    forced = _json(node_sandbox, "rm", app_images["v1"], "--force")
    assert forced["exit"] == 0
    assert forced["nodes"][0]["images"][0]["status"] == "removed"
    assert name not in image_names(node)
    assert forced["nodes"][0]["freed_bytes"] > 0


def test_images_outside_kubelets_namespace(sandbox: Sandbox, app_images: dict[str, str]) -> None:
    name = f"e2e/plain-{secrets.token_hex(3)}:dev"
    push_json(sandbox, app_images["v1"], "node-1", extra=("--name", name, "--namespace", "default"))
    [view] = _json(sandbox, "images", name, "--namespace", "default", aliases=("node-1",))["images"]
    [copy] = view["nodes"]
    assert copy["held"] and copy["unpacked"] is True  # in overlayfs, CRI's snapshotter here
    assert copy["cri"] is None  # CRI only indexes k8s.io
    [elsewhere] = _json(sandbox, "images", name, aliases=("node-1",))["images"]
    assert elsewhere["nodes"][0]["held"] is False  # not in k8s.io
