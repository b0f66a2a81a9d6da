"""``nodeload push`` as a user runs it: the real CLI in a subprocess, against a real containerd
and a real OpenSSH sshd on 127.0.0.1, with OCI layout sources (no Docker needed).

What a push claims to have done on the node is checked with ``ctr`` against that containerd.
Each test writes layouts from its own seed, so no other test's blobs are on the shared
containerd.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeload.containerd.client import ContainerdClient
from nodeload.image import MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, canonical_json, descriptor_for
from nodeload.sandbox.measure import run_measured
from tests.helpers.oci import ImageSpec, LayoutInfo, write_layout
from tests.integration.cli import (
    REPO,
    USER,
    Cli,
    blobs_of,
    chain_ids,
    content,
    images,
    keygen,
    layout,
    snapshots,
    stored_size,
)
from tests.integration.nodes import Containerd, Sshd, free_port

pytestmark = pytest.mark.integration


# -- 1. happy path ---------------------------------------------------------------


def test_push_sends_each_blob_once_and_cri_sees_the_image(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    info = layout(tmp_path, 1, ref="v1", name="example.com/happy:v1")

    first = cli.push_ok(f"oci:{info.path}:v1", node)
    on_node = content(node)
    assert on_node == set(info.blobs)
    assert first["bytes_sent"] == sum(stored_size(node, d) for d in on_node)
    assert first["blobs_sent"] == first["blobs_total"] == len(info.blobs)
    assert (first["name"], first["digest"], first["platform"]) == (
        "example.com/happy:v1",
        info.root.digest,
        "linux/amd64",
    )
    assert first["layers_unpacked"] == 2
    assert first["cri_indexed"] is True
    # CRI keeps a record of its own under the image ID (the config digest).
    assert images(node) == {"example.com/happy:v1", info.images[0].config.digest}

    again = cli.push_ok(f"oci:{info.path}:v1", node)
    assert (again["bytes_sent"], again["blobs_sent"], again["layers_unpacked"]) == (0, 0, 0)
    assert again["bytes_skipped"] == first["bytes_sent"]


# -- 2. multi-platform index -----------------------------------------------------


@pytest.mark.skipif(platform.machine() not in ("x86_64", "amd64"), reason="expects an amd64 host")
def test_index_sends_only_the_chosen_platform(cli: Cli, fresh_containerd: Containerd, tmp_path: Path) -> None:
    node = fresh_containerd
    info = layout(tmp_path, 2, platforms=["linux/amd64", "linux/arm64"])
    assert info.index is not None
    amd64, arm64 = (blobs_of(image) for image in info.images)

    native = cli.push_ok(info, node, "--name", "example.com/multi:v1")
    assert native["platform"] == "linux/amd64"
    assert content(node) == amd64 | {info.index.digest}  # no arm64 blob at all
    assert native["bytes_sent"] == sum(len(info.blobs[d]) for d in amd64 | {info.index.digest})

    arm = cli.push_ok(
        info, node, "--name", "example.com/multi-arm:v1", "--platform", "linux/arm64", "--no-unpack"
    )
    assert arm["platform"] == "linux/arm64/v8"
    assert content(node) == amd64 | arm64 | {info.index.digest}
    assert (arm["blobs_sent"], arm["blobs_skipped"], arm["layers_unpacked"]) == (4, 1, 0)  # index skipped
    assert arm["bytes_sent"] == sum(len(info.blobs[d]) for d in arm64)
    # CRI resolves an index to the host's platform, so it never reports the arm64 config
    # (nodeload waits 10 s for it, then says False).
    assert arm["cri_indexed"] is not True

    # Unpacking foreign layers works: they are plain tars. (In "default", so CRI is not awaited.)
    unpacked = cli.push_ok(
        info,
        node,
        "--name",
        "example.com/multi-arm:v1",
        "--platform",
        "linux/arm64",
        "--namespace",
        "default",
    )
    assert (unpacked["layers_unpacked"], unpacked["bytes_sent"]) == (2, 0)
    assert set(chain_ids(info.images[1].diff_ids)) <= snapshots(node, "default")

    before = content(node)
    absent = cli.push(
        info, node, "--name", "example.com/multi-s390x:v1", "--platform", "linux/s390x", json=False
    )
    assert absent.code == 1
    assert "no linux/s390x variant" in absent.err
    assert "linux/amd64" in absent.err and "linux/arm64" in absent.err  # what it offers
    assert "example.com/multi-s390x:v1" not in images(node)
    assert content(node) == before


# -- 3. host keys ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unknown", "changed"])
def test_untrusted_host_key_sends_nothing(
    cli: Cli, sshd: Sshd, fresh_containerd: Containerd, host_fingerprint: str, tmp_path: Path, case: str
) -> None:
    node = fresh_containerd
    known_hosts = tmp_path / "known_hosts"
    if case == "unknown":
        known_hosts.write_text("")
    else:
        impostor = keygen(tmp_path / "impostor").with_suffix(".pub").read_text()
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}")
    info = layout(tmp_path, 3)
    login = ("-i", str(sshd.client_key), "--known-hosts", str(known_hosts))

    refused = cli.push(info, node, "--name", "example.com/hostkey:v1", *login, login=False, json=False)
    assert refused.code == 1
    assert host_fingerprint in refused.err
    assert "Nothing was sent" in refused.err
    # A changed key is flagged; the exact line to add to known_hosts is offered for unknown hosts only.
    assert ("HOST KEY CHANGED" in refused.err) == (case == "changed")
    assert (sshd.host_key_line in refused.err) == (case == "unknown")
    assert content(node) == set() and images(node) == set()

    cli.push_ok(
        info, node, "--name", "example.com/hostkey:v1", *login, "--insecure-skip-host-key-check", login=False
    )
    assert "example.com/hostkey:v1" in images(node)


# -- 4. authentication -------------------------------------------------------------------


def test_key_not_authorized_fails_authentication(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger")
    login = ("-i", str(stranger), "--known-hosts", str(sshd.known_hosts))
    run = cli.push(
        layout(tmp_path, 4), containerd, "--name", "example.com/auth:v1", *login, login=False, json=False
    )
    assert run.code == 1
    assert f"{sshd.node}: FAILED: SSH authentication failed" in run.err
    assert "example.com/auth:v1" not in images(containerd)


# -- 5. unreachable nodes -------------------------------------------------------------------


def test_unreachable_node_fails_alone(cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path) -> None:
    closed = f"root@127.0.0.1:{free_port()}"
    info = layout(tmp_path, 5)

    alone = cli.push(info, containerd, "--name", "example.com/reach:v1", nodes=[closed], json=False)
    assert alone.code == 1
    assert f"{closed}: FAILED: cannot connect over SSH" in alone.err

    both = cli.push(info, containerd, "--name", "example.com/reach:v1", nodes=[closed, sshd.node])
    assert both.code == 1
    bad, good = both.nodes
    assert (bad["node"], bad["status"]) == (closed, "failed")
    assert "cannot connect over SSH" in bad["error"]
    assert (good["node"], good["status"]) == (sshd.node, "ok")
    assert "example.com/reach:v1" in images(containerd)


# -- 6. the containerd socket ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("socket_dir_mode", "says"),
    [
        pytest.param(0o711, f"exists but user '{USER}' may not open it", id="dir-0711"),  # /run/containerd
        pytest.param(0o700, f"is out of reach: user '{USER}' may not enter", id="dir-0700"),  # hidden
    ],
)
def test_socket_the_login_user_may_not_use(
    cli: Cli,
    sshd: Sshd,
    login_user: str,
    fresh_containerd: Containerd,
    tmp_path: Path,
    socket_dir_mode: int,
    says: str,
) -> None:
    node = fresh_containerd
    node.root.chmod(socket_dir_mode)  # the socket itself is root's, mode 0660
    as_user = f"{login_user}@127.0.0.1:{sshd.port}"
    run = cli.push(layout(tmp_path, 6), node, "--name", "example.com/perm:v1", nodes=[as_user], json=False)
    assert run.code == 1
    assert f"{node.socket} {says}" in run.err
    assert "needs read and write access" in run.err


def test_socket_missing_or_dead(cli: Cli, fresh_containerd: Containerd, tmp_path: Path) -> None:
    info = layout(tmp_path, 12)
    missing = cli.push(
        info, None, "--name", "example.com/sock:v1", "--containerd-socket", "/nonexistent.sock", json=False
    )
    assert missing.code == 1
    assert "/nonexistent.sock does not exist on the node" in missing.err

    fresh_containerd.process.kill()  # leaves its socket file behind
    fresh_containerd.process.wait()
    dead = cli.push(info, fresh_containerd, "--name", "example.com/sock:v1", json=False)
    assert dead.code == 1
    assert f"{fresh_containerd.socket} exists" in dead.err and "is containerd running" in dead.err


# -- 7. disk full --------------------------------------------------------------------------------


def test_full_disk_fails_and_gives_the_space_back(
    cli: Cli, small_containerd: Containerd, tmp_path: Path
) -> None:
    node = small_containerd
    big = write_layout(tmp_path / "big", [ImageSpec((70,), layer_size=24 << 20)])  # 24 MiB > 16 MiB
    run = cli.push(big, node, "--name", "example.com/big:v1", json=False)
    assert run.code == 1
    assert "node disk is full" in run.err and "no space left on device" in run.err, run.err
    assert images(node) == set()
    # The partial upload was discarded: the node has its space back and takes a small image.
    cli.push_ok(layout(tmp_path, 7), node, "--name", "example.com/small:v1")
    assert "example.com/small:v1" in images(node)


# -- 8. bad input -----------------------------------------------------------------------------------


def _missing_dir(info: LayoutInfo) -> tuple[str, Path]:
    return f"oci:{info.path}-missing", Path(f"{info.path}-missing")


def _malformed_index(info: LayoutInfo) -> tuple[str, Path]:
    (info.path / "index.json").write_text("{not json")
    return f"oci:{info.path}", info.path / "index.json"


def _missing_blob(info: LayoutInfo) -> tuple[str, Path]:
    blob = info.blob_path(info.images[0].layers[-1].digest)
    blob.unlink()
    return f"oci:{info.path}", blob


@pytest.mark.parametrize("breakage", [_missing_dir, _malformed_index, _missing_blob])
def test_unreadable_source_names_the_path(
    cli: Cli, containerd: Containerd, tmp_path: Path, breakage: Callable[[LayoutInfo], tuple[str, Path]]
) -> None:
    source, path = breakage(layout(tmp_path, 8))
    run = cli.push(source, containerd, "--name", "example.com/broken:v1", json=False)
    assert run.code == 1
    assert str(path) in run.err
    assert "example.com/broken:v1" not in images(containerd)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(("--node", "root@127.0.0.1:ssh"), "invalid node 'root@127.0.0.1:ssh'", id="node"),
        pytest.param(
            ("--node", "root@127.0.0.1", "--platform", "linux"), "invalid platform 'linux'", id="platform"
        ),
        pytest.param((), "no node given", id="no-node"),
        pytest.param(
            ("--node", "root@127.0.0.1", "--namespace", "bad ns"), "invalid --namespace 'bad ns'", id="ns"
        ),
    ],
)
def test_usage_errors_exit_2(cli: Cli, tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    run = cli.run("push", f"oci:{tmp_path}", *args)
    assert run.code == 2
    assert says in run.err


# -- 9. ssh config ------------------------------------------------------------------------------------


def test_ssh_config_alias(cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host mynode\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {sshd.known_hosts}\n"
    )
    info = layout(tmp_path, 9)
    result = cli.push_ok(
        info, containerd, "--name", "example.com/alias:v1", "-F", str(config), nodes=["mynode"], login=False
    )
    assert result["node"] == "mynode"
    assert "example.com/alias:v1" in images(containerd)


def test_ssh_agent_key_is_used(cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path) -> None:
    """No -i, no ~/.ssh: the key comes from a running ssh-agent, as with ssh."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = {**cli.env, "SSH_AUTH_SOCK": str(sock)}
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], env=env, check=True, capture_output=True)
        agent_cli = Cli(sshd, env)
        info = layout(tmp_path, 16)
        args = ("--name", "example.com/agent:v1", "--known-hosts", str(sshd.known_hosts))
        without_agent = cli.push(info, containerd, *args, login=False)
        assert "authentication failed" in without_agent.nodes[0]["error"]  # control: no key elsewhere
        result = agent_cli.push_ok(info, containerd, *args, login=False)
        assert result["status"] == "ok"
    finally:
        agent.terminate()
        agent.wait()


# -- 10. floating tags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "warns"),
    [("example.com/tag:latest", True), ("example.com/tag", True), ("example.com/tag:v1", False)],
)
def test_floating_tag_warns_about_pull_policy(
    cli: Cli, containerd: Containerd, tmp_path: Path, name: str, warns: bool
) -> None:
    run = cli.push(layout(tmp_path, 10), containerd, "--name", name)
    assert run.code == 0, run.err
    assert ("warning:" in run.err and "imagePullPolicy" in run.err) == warns
    assert json.loads(run.out)["nodes"][0]["status"] == "ok"  # the warning stays off stdout


# -- 11. namespaces -------------------------------------------------------------------------------------


def test_namespace_default_is_not_cri(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    info = layout(tmp_path, 11)
    default = cli.push_ok(info, containerd, "--name", "example.com/ns:v1", "--namespace", "default")
    assert (default["namespace"], default["cri_indexed"]) == ("default", None)
    assert default["bytes_sent"] == sum(len(blob) for blob in info.blobs.values())
    assert "example.com/ns:v1" in images(containerd, "default")
    assert "example.com/ns:v1" not in images(containerd, "k8s.io")

    # containerd shares blobs across namespaces: k8s.io gets the image without resending them.
    cri = cli.push_ok(info, containerd, "--name", "example.com/ns:v1")
    assert (cri["namespace"], cri["cri_indexed"], cri["bytes_sent"]) == ("k8s.io", True, 0)
    assert (cri["blobs_sent"], cri["bytes_resumed"]) == (0, 0)
    assert cri["bytes_skipped"] == default["bytes_sent"]


# -- 12. memory --------------------------------------------------------------------------------


class _Noise:
    """``size`` random bytes, produced as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class _HashingFile:
    def __init__(self, path: Path) -> None:
        self.file, self.hash, self.size = open(path, "wb"), hashlib.sha256(), 0  # noqa: SIM115

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)


def _big_layout(directory: Path, size: int) -> None:
    """An OCI layout with one uncompressed layer of ``size`` random bytes, written streaming."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    out = _HashingFile(directory / "layer.tmp")
    with tarfile.open(fileobj=out, mode="w|") as tar:  # type: ignore[call-overload]
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, _Noise(size))
    out.file.close()
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": "sha256:" + out.hash.hexdigest(),
    }
    layer["size"] = out.size
    (directory / "layer.tmp").rename(blobs / out.hash.hexdigest())
    config = canonical_json(
        {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": descriptor_for(MEDIA_OCI_CONFIG, config).to_json(),
            "layers": [layer],
        }
    )
    for data in (config, manifest):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    entry = descriptor_for(MEDIA_OCI_MANIFEST, manifest).to_json()
    entry["annotations"] = {"org.opencontainers.image.ref.name": "big"}
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def test_memory_does_not_grow_with_the_blob(cli: Cli, fresh_containerd: Containerd, tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    _big_layout(tmp_path / "big", size)
    argv = [
        sys.executable,
        "-m",
        "nodeload",
        "push",
        f"oci:{tmp_path / 'big'}:big",
        "--name",
        "example.com/big:v1",
    ]
    argv += [
        "--node",
        cli.sshd.node,
        "-i",
        str(cli.sshd.client_key),
        "--known-hosts",
        str(cli.sshd.known_hosts),
    ]
    argv += ["--containerd-socket", str(fresh_containerd.socket), "--json", "--no-unpack"]
    with tempfile.TemporaryFile() as out:
        measured = run_measured(argv, cwd=REPO, env=cli.env, stdout=out, stderr=subprocess.DEVNULL)
        out.seek(0)
        report = json.loads(out.read())
    assert measured.code == 0
    assert report["nodes"][0]["bytes_sent"] > size
    # The project's bound: 200 MB whatever the image size (about 70 MiB in practice). Holding
    # this blob whole would exceed it.
    assert 0 < measured.peak_rss < 200 * 1000 * 1000 < size + 60 * 1024 * 1024


# -- 13. safety against what else happens on the node ------------------------------------------


@pytest.mark.parametrize("protected", [True, False])
def test_lease_protects_what_the_node_already_had(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path, protected: bool
) -> None:
    """Blobs a push relies on survive a concurrent deletion of the image that held them."""
    info = layout(tmp_path, 13)
    # Namespace "default": in k8s.io, CRI's own record of the image would keep it alive.
    cli.push_ok(info, fresh_containerd, "--name", "example.com/old:v1", "--namespace", "default")
    layer = info.images[0].layers[0].digest

    async def hold_and_delete() -> bool:
        client = ContainerdClient(f"unix:{fresh_containerd.socket}", "default")
        try:
            async with client.leased():
                if protected:
                    await client.protect([layer])
                # kubelet's image GC, say: the image goes and a synchronous GC runs.
                fresh_containerd.ctr("images", "rm", "--sync", "example.com/old:v1", namespace="default")
                return await client.content_info(layer) is not None
        finally:
            await client.close()

    assert asyncio.run(hold_and_delete()) is protected


def test_no_unpack_needs_no_snapshotter(cli: Cli, fresh_containerd: Containerd, tmp_path: Path) -> None:
    result = cli.push_ok(
        layout(tmp_path, 14),
        fresh_containerd,
        "--name",
        "example.com/raw:v1",
        "--no-unpack",
        "--snapshotter",
        "nosuch",
    )
    assert result["layers_unpacked"] == 0


def test_single_platform_image_for_another_platform(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = write_layout(tmp_path / "arm", [ImageSpec((15,), "linux/arm64")])
    run = cli.push(info, fresh_containerd, "--name", "example.com/arm:v1")
    assert run.code == 1
    error = run.nodes[0]["error"]
    assert "the image is for linux/arm64" in error and "--platform linux/arm64" in error
    assert content(fresh_containerd) == set()  # refused before anything was sent
    forced = cli.push_ok(info, fresh_containerd, "--name", "example.com/arm:v1", "--platform", "linux/arm64")
    assert forced["platform"].startswith("linux/arm64")
