"""What a hostile ssh config, network path, archive or layout could do, tried against the real
CLI, a real sshd and a real containerd: one test (or table row) per finding of the security
review. Each ends with the node unchanged unless the push was meant to succeed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.docker_archive import saved_image, write_docker_archive
from tests.helpers.oci import ImageSpec, LayoutInfo, tar_directory, write_layout
from tests.integration.cli import REPO, Cli, Run, content, images, layout
from tests.integration.nodes import Containerd, Sshd, free_port, start_sshd

pytestmark = pytest.mark.integration

TRACEBACK = "Traceback (most recent call last)"


def ssh_config(path: Path, sshd: Sshd, *extra: str, alias: str = "node") -> Path:
    """An ssh config with one alias for the test sshd, plus ``extra`` option lines."""
    lines = [
        f"Host {alias}",
        "  HostName 127.0.0.1",
        f"  Port {sshd.port}",
        "  User root",
        f"  IdentityFile {sshd.client_key}",
        "  IdentitiesOnly yes",
        *(f"  {line}" for line in extra),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def push_alias(cli: Cli, config: Path, source: LayoutInfo, node: Containerd, *args: str) -> dict[str, object]:
    """Push to the ``node`` alias of ``config``; the JSON result of that node."""
    run = cli.run(
        "push", f"oci:{source.path}", "--node", "node", "-F", str(config),
        "--containerd-socket", str(node.socket), "--json", *args,
    )  # fmt: skip
    assert TRACEBACK not in run.err, run.err
    (result,) = run.nodes
    return result


# -- 1. host-key checking cannot be switched off by the ssh config -------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(["UserKnownHostsFile none"], id="user-file-none"),
        pytest.param(["UserKnownHostsFile /nonexistent/known_hosts"], id="user-file-missing"),
        pytest.param(
            ["UserKnownHostsFile /nonexistent/known_hosts", "GlobalKnownHostsFile {empty}"],
            id="missing-user-file-and-global-file",
        ),
        pytest.param(["StrictHostKeyChecking no", "UserKnownHostsFile {empty}"], id="strict-no"),
        pytest.param([], id="no-known-hosts-anywhere"),
    ],
)
def test_ssh_config_cannot_turn_off_host_key_checking(
    cli: Cli, sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, settings: list[str]
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = ssh_config(tmp_path / "config", sshd, *(s.format(empty=empty) for s in settings))
    result = push_alias(cli, config, layout(tmp_path, 101), fresh_containerd, "--name", "example.com/hk:v1")
    assert result["status"] == "failed"
    assert "is not in known_hosts" in str(result["error"]) and "Nothing was sent" in str(result["error"])
    # The exact line to add names the HostName and port used, not the alias.
    assert sshd.host_key_line in str(result["error"])
    assert content(fresh_containerd) == set() and images(fresh_containerd) == set()


def test_accept_new_records_an_unknown_key_and_refuses_a_changed_one(
    cli: Cli, sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # its directory does not exist yet
    config = ssh_config(
        tmp_path / "config", sshd, "StrictHostKeyChecking accept-new", f"UserKnownHostsFile {known}"
    )
    first = push_alias(cli, config, layout(tmp_path, 102), fresh_containerd, "--name", "example.com/an:v1")
    assert first["status"] == "ok", first
    assert known.read_text().splitlines() == [sshd.host_key_line]
    assert known.stat().st_mode & 0o777 == 0o600

    impostor = start_sshd(tmp_path / "impostor")  # another host key, then on the node's address
    try:
        known.write_text(sshd.host_key_line.replace(str(sshd.port), str(impostor.port)) + "\n")
        moved = ssh_config(
            tmp_path / "config2", impostor, "StrictHostKeyChecking accept-new", f"UserKnownHostsFile {known}"
        )
        changed = push_alias(
            cli, moved, layout(tmp_path, 103), fresh_containerd, "--name", "example.com/an:v2"
        )
    finally:
        impostor.stop()
    assert changed["status"] == "failed"
    assert "HOST KEY CHANGED" in str(changed["error"])
    assert len(known.read_text().splitlines()) == 1  # the impostor's key was not added
    assert "ex.com/an:v2" not in images(fresh_containerd)


class _SwitchingRelay:
    """A TCP relay that sends its first connection to one sshd and later ones to another:
    a man in the middle who answers a second "fingerprint" connection with the real node."""

    def __init__(self, first: int, then: int) -> None:
        self.port = free_port()
        self._targets = [first, then]
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        n = 0
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._targets[min(n, 1)]))
            n += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_rejected_key_is_the_one_from_the_failed_handshake(
    cli: Cli, sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    attacker = start_sshd(tmp_path / "attacker")
    relay = _SwitchingRelay(first=attacker.port, then=sshd.port)
    try:
        known = tmp_path / "known_hosts"
        known.write_text("")
        run = cli.push(
            layout(tmp_path, 104), fresh_containerd, "--name", "example.com/mitm:v1",
            "-i", str(sshd.client_key), "--known-hosts", str(known),
            nodes=[f"root@127.0.0.1:{relay.port}"], login=False,
        )  # fmt: skip
    finally:
        relay.close()
        attacker.stop()
    error = run.nodes[0]["error"]
    attacker_key = attacker.host_key_line.split(" ", 1)[1]
    real_key = sshd.host_key_line.split(" ", 1)[1]
    assert f"[127.0.0.1]:{relay.port} {attacker_key}" in error
    assert real_key not in error


# -- 2. no agent or X11 forwarding, whatever the config says ------------------------------------


@pytest.fixture()
def chatty_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd of its own whose log records every channel request (LogLevel DEBUG1)."""
    server = start_sshd(tmp_path / "sshd-debug", log_level="DEBUG1")
    yield server
    server.stop()


def test_agent_and_x11_are_never_forwarded(chatty_sshd: Sshd, cli: Cli, tmp_path: Path) -> None:
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if agent_sock.exists():
                break
            time.sleep(0.05)
        config = ssh_config(
            tmp_path / "config", chatty_sshd,
            "ForwardAgent yes", "ForwardX11 yes", "ForwardX11Trusted yes",
            f"UserKnownHostsFile {chatty_sshd.known_hosts}",
        )  # fmt: skip
        # A missing socket makes nodeload open a session channel to explain why.
        run = cli.run(
            "push", f"oci:{layout(tmp_path, 105).path}", "--name", "example.com/fwd:v1",
            "--node", "node", "-F", str(config), "--containerd-socket", "/nonexistent.sock",
            env={"SSH_AUTH_SOCK": str(agent_sock), "DISPLAY": ":0"},
        )  # fmt: skip
    finally:
        agent.terminate()
        agent.wait()
    assert run.code == 1 and "/nonexistent.sock does not exist on the node" in run.err
    log = (chatty_sshd.root / "sshd.log").read_text()
    assert "session" in log and "exec" in log  # the session channel was opened and logged
    assert "auth-agent-req" not in log
    assert "x11-req" not in log


# -- 3. names taken from inside a source --------------------------------------------------------


PAUSE = "registry.k8s.io/pause:3.9"


def test_archive_cannot_repoint_an_existing_image(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    real_pause = layout(tmp_path, 106)
    cli.push_ok(real_pause, node, "--name", PAUSE)
    archive = write_docker_archive(tmp_path / "evil.tar", [saved_image([PAUSE], [107])])
    before = node.ctr("images", "ls")

    hostile = cli.push(f"docker-archive:{archive}", node)
    assert hostile.code == 1
    assert f"using the name {PAUSE} found inside docker-archive:{archive}" in hostile.err
    error = hostile.nodes[0]["error"]
    assert f"{PAUSE} already exists on the node" in error and f"--name {PAUSE}" in error
    assert node.ctr("images", "ls") == before  # still the real pause image

    # Named by the user, in either form, the same archive may replace it.
    assert cli.push_ok(f"docker-archive:{archive}:{PAUSE}", node)["name"] == PAUSE
    assert cli.push_ok(f"docker-archive:{archive}", node, "--name", PAUSE)["name"] == PAUSE
    # A name nobody uses yet is simply created from the source's own name.
    fresh = write_docker_archive(tmp_path / "app.tar", [saved_image(["example.com/app:v1"], [108])])
    assert cli.push_ok(f"docker-archive:{fresh}", node)["name"] == "example.com/app:v1"


def test_a_name_from_inside_may_move_to_the_same_image_under_another_manifest(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    """The same image as a docker-archive and as an OCI archive: two manifests, one config (image
    ID). Moving the record between them changes nothing kubelet runs, so it is allowed; another
    image under that name still is not."""
    node, name = fresh_containerd, "example.com/same:v1"
    archive = write_docker_archive(tmp_path / "same.tar", [saved_image([name], [113])])
    oci = write_layout(tmp_path / "same-oci", [ImageSpec(layer_seeds=(113,))], name=name)
    first = cli.push_ok(f"docker-archive:{archive}", node)
    second = cli.push_ok(f"oci:{oci.path}", node)
    assert second["name"] == first["name"] == name
    assert second["digest"] != first["digest"]  # another manifest...
    config = json.loads(node.ctr("content", "get", second["digest"]))["config"]["digest"]
    assert (
        config == json.loads(node.ctr("content", "get", first["digest"]))["config"]["digest"]
    )  # ...same image
    assert name in images(node)

    other = write_docker_archive(tmp_path / "other.tar", [saved_image([name], [114])])
    refused = cli.push(f"docker-archive:{other}", node)
    assert refused.code == 1 and f"{name} already exists on the node" in refused.nodes[0]["error"]


def test_digest_pinned_name_must_match_what_is_pushed(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 109)
    other = "sha256:" + "e" * 64
    wrong = cli.push(info, fresh_containerd, "--name", f"example.com/pin@{other}")
    assert wrong.code == 1
    assert f"it pins {other}" in wrong.nodes[0]["error"]
    assert images(fresh_containerd) == set()
    right = cli.push_ok(info, fresh_containerd, "--name", f"example.com/pin@{info.root.digest}")
    assert right["name"] == f"example.com/pin@{info.root.digest}"


# -- 4. and 5. hostile documents and layouts ------------------------------------------------------


def _nested(info: LayoutInfo) -> str:
    (info.path / "index.json").write_text("[" * 200_000 + "]" * 200_000)
    return "nested"


def _manifests_not_a_list(info: LayoutInfo) -> str:
    (info.path / "index.json").write_text('{"manifests": {"a": 1}}')
    return "no 'manifests' list"


def _edit_index_entry(info: LayoutInfo, **changes: object) -> None:
    index = json.loads((info.path / "index.json").read_text())
    index["manifests"][0].update(changes)
    (info.path / "index.json").write_text(json.dumps(index))


def _size_is_a_string(info: LayoutInfo) -> str:
    _edit_index_entry(info, size="12")
    return "'size' must be an integer"


def _size_beyond_int64(info: LayoutInfo) -> str:
    _edit_index_entry(info, size=2**64)
    return "'size' is out of range"


def _digest_escapes(info: LayoutInfo) -> str:
    _edit_index_entry(info, digest="sha256:../../../../etc/passwd")
    return "invalid digest"


def _annotations_a_list(info: LayoutInfo) -> str:
    _edit_index_entry(info, annotations=["x"])
    return "'annotations' must be an object"


def _rewrite(
    info: LayoutInfo,
    manifest: Callable[[dict[str, Any]], object] = lambda doc: None,
    config: Callable[[dict[str, Any]], object] = lambda doc: None,
) -> None:
    """Edit the image's config and manifest documents, keeping every digest and size valid."""
    config_doc = json.loads(info.images[0].config_bytes)
    config(config_doc)
    config_desc = _put_blob(info, json.dumps(config_doc).encode())
    manifest_doc = json.loads(info.blobs[info.root.digest])
    manifest_doc["config"] = {**manifest_doc["config"], **config_desc}
    manifest(manifest_doc)
    _edit_index_entry(info, **_put_blob(info, json.dumps(manifest_doc).encode()))


def _put_blob(info: LayoutInfo, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info.blob_path(digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _layers_not_a_list(info: LayoutInfo) -> str:
    _rewrite(info, manifest=lambda doc: doc.update(layers="all of them"))
    return "'layers' must be a list"


def _config_missing(info: LayoutInfo) -> str:
    _rewrite(info, manifest=lambda doc: doc.pop("config"))
    return "'config' is missing"


def _layer_size_negative(info: LayoutInfo) -> str:
    _rewrite(info, manifest=lambda doc: doc["layers"][0].update(size=-1))
    return "'size' is out of range"


def _rootfs_a_list(info: LayoutInfo) -> str:
    _rewrite(info, config=lambda doc: doc.update(rootfs=[]))
    return "'rootfs' must be an object"


def _diff_ids_wrong_type(info: LayoutInfo) -> str:
    _rewrite(info, config=lambda doc: doc.update(rootfs={"type": "layers", "diff_ids": [1, 2]}))
    return "diff_ids[0] must be a string"


def _config_os_a_number(info: LayoutInfo) -> str:
    _rewrite(info, config=lambda doc: doc.update(os=7))
    return "'os' must be a string"


def _index_json_is_dev_zero(info: LayoutInfo) -> str:
    (info.path / "index.json").unlink()
    (info.path / "index.json").symlink_to("/dev/zero")
    return "symlink"


def _blob_is_a_fifo(info: LayoutInfo) -> str:
    blob = info.blob_path(info.images[0].layers[0].digest)
    blob.unlink()
    os.mkfifo(blob)
    return "not a regular file"


def _blobs_dir_is_a_symlink(info: LayoutInfo) -> str:
    outside = info.path.parent / "elsewhere"
    (info.path / "blobs").rename(outside)
    (info.path / "blobs").symlink_to(outside)
    return "symlink"


HOSTILE_LAYOUTS: list[Callable[[LayoutInfo], str]] = [
    _nested,
    _manifests_not_a_list,
    _size_is_a_string,
    _size_beyond_int64,
    _digest_escapes,
    _annotations_a_list,
    _layers_not_a_list,
    _config_missing,
    _layer_size_negative,
    _rootfs_a_list,
    _diff_ids_wrong_type,
    _config_os_a_number,
    _index_json_is_dev_zero,
    _blob_is_a_fifo,
    _blobs_dir_is_a_symlink,
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("breakage", HOSTILE_LAYOUTS, ids=lambda f: f.__name__.strip("_"))
def test_hostile_layout_is_a_clear_error(
    cli: Cli, containerd: Containerd, tmp_path: Path, breakage: Callable[[LayoutInfo], str]
) -> None:
    info = layout(tmp_path, 110)
    says = breakage(info)
    before = content(containerd)
    run = cli.push(info, containerd, "--name", "example.com/hostile:v1")
    assert run.code == 1
    assert TRACEBACK not in run.err
    report = json.loads(run.out)  # the JSON document is still printed
    errors = [report.get("error")] + [n["error"] for n in report["nodes"]]
    assert any(says in str(e) for e in errors), (says, run.err)
    # Blobs are written a few at a time: a sound one may have gone before the broken one failed
    # the push (its lease is gone, so containerd collects it). Nothing else ever reaches the node.
    assert content(containerd) - before <= set(info.blobs)
    assert "example.com/hostile:v1" not in images(containerd)


def test_blob_linked_to_a_file_outside_the_layout_is_not_sent(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 111)
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(1 << 20))
    blob = info.blob_path(info.images[0].layers[0].digest)
    blob.unlink()
    blob.symlink_to(secret)
    run = cli.push(info, fresh_containerd, "--name", "example.com/leak:v1")
    (result,) = run.nodes
    assert result["status"] == "failed" and "symlink" in result["error"]
    # Not one block of the 1 MiB file crossed the SSH connection.
    assert result["wire_bytes_sent"] < 256 * 1024
    assert info.images[0].layers[0].digest not in content(fresh_containerd)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        pytest.param({"Config": 5, "RepoTags": [], "Layers": []}, "'Config' must be a string", id="config"),
        pytest.param(
            {"Config": "c.json", "RepoTags": "example.com/x:1", "Layers": []},
            "'RepoTags' must be a list",
            id="repotags",
        ),
        pytest.param({"Config": "c.json", "Layers": [1]}, "Layers[0] must be a string", id="layers"),
    ],
)
def test_hostile_docker_archive_is_a_clear_error(
    cli: Cli, containerd: Containerd, tmp_path: Path, entry: dict[str, object], says: str
) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("manifest.json", json.dumps([entry]).encode()), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    run = cli.push(f"docker-archive:{archive}", containerd, "--name", "example.com/bad:v1")
    assert run.code == 1 and TRACEBACK not in run.err
    assert says in run.err and says in json.loads(run.out)["nodes"][0]["error"]


def test_bad_ssh_config_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host x\n  Port notanumber\n")
    run = cli.run("push", f"oci:{tmp_path}", "--node", "x", "-F", str(config), "--json")
    assert run.code == 2 and TRACEBACK not in run.err
    assert f"-F {config}" in run.err and json.loads(run.out)["nodes"] == []


def test_unwritable_cache_is_a_clear_error(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    archive = write_docker_archive(tmp_path / "app.tar", [saved_image(["example.com/cache:v1"], [112])])
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    run = cli.run(
        "push", f"docker-archive:{archive}", "--node", cli.sshd.node, "-i", str(cli.sshd.client_key),
        "--known-hosts", str(cli.sshd.known_hosts), "--containerd-socket", str(containerd.socket),
        env={"XDG_CACHE_HOME": str(not_a_dir)},
    )  # fmt: skip
    assert run.code == 1 and TRACEBACK not in run.err
    assert "cannot use the layer cache" in run.err and "XDG_CACHE_HOME" in run.err


def test_control_characters_from_a_source_do_not_reach_the_terminal(
    cli: Cli, containerd: Containerd, tmp_path: Path
) -> None:
    info = write_layout(tmp_path / "oci", ref="\x1b]0;pwned\x07\x1b[2J")
    run = cli.push(f"oci:{info.path}:nosuch", containerd, json=False)
    assert run.code == 1 and "no image 'nosuch'" in run.err
    assert "\x1b" not in run.err and "\x07" not in run.err


# -- 6. decompression bombs and temporary copies --------------------------------------------------


def test_decompression_bomb_is_refused_and_leaves_nothing(
    cli: Cli, containerd: Containerd, tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.tar.zst"
    with bomb.open("wb") as out:
        zeros = subprocess.Popen(["head", "-c", str(2 << 30), "/dev/zero"], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-q", "-c"], stdin=zeros.stdout, stdout=out, check=True)
        zeros.wait()
    assert bomb.stat().st_size < 256 * 1024
    cache = tmp_path / "cache"
    run = cli.run(
        "push", f"oci-archive:{bomb}", "--node", cli.sshd.node, "-i", str(cli.sshd.client_key),
        "--known-hosts", str(cli.sshd.known_hosts), "--containerd-socket", str(containerd.socket),
        "--name", "example.com/bomb:v1", env={"XDG_CACHE_HOME": str(cache)},
    )  # fmt: skip
    assert run.code == 1 and TRACEBACK not in run.err
    assert "decompression bomb" in run.err
    assert list((cache / "nodeload" / "tmp").iterdir()) == []


def test_sigterm_removes_the_temporary_copy(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    info = write_layout(tmp_path / "oci", name="example.com/term:v1")
    with (info.path / "filler").open("wb") as filler:  # makes the decompression take a moment
        for _ in range(160):
            filler.write(os.urandom(1 << 20))
    archive = tar_directory(info.path, tmp_path / "image.tar")
    packed = tmp_path / "image.tar.gz"
    with archive.open("rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    scratch = tmp_path / "cache" / "nodeload" / "tmp"
    argv = [
        sys.executable, "-m", "nodeload", "push", f"oci-archive:{packed}", "--node", cli.sshd.node,
        "-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts),
        "--containerd-socket", str(containerd.socket),
    ]  # fmt: skip
    env = {**cli.env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (scratch.is_dir() and any(scratch.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "no temporary copy appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(scratch.iterdir()) == []


# -- 8. the layer cache ------------------------------------------------------------------------------


def test_damaged_cache_entry_is_rebuilt_within_the_run(
    cli: Cli, containerd: Containerd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    archive = write_docker_archive(
        tmp_path / "app.tar", [saved_image(["example.com/cached:v1"], [113], 1 << 20)]
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    login = ["-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts)]

    def push(node: Containerd) -> dict[str, object]:
        run = cli.run(
            "push", f"docker-archive:{archive}", "--node", cli.sshd.node, *login,
            "--containerd-socket", str(node.socket), "--json", env=env,
        )  # fmt: skip
        (result,) = run.nodes
        return result

    assert push(containerd)["status"] == "ok"
    (blob,) = (tmp_path / "cache" / "nodeload" / "layers" / "sha256").glob("*.tar.gz")
    good = blob.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF  # same size: the cache's cheap check cannot see it
    blob.write_bytes(bytes(damaged))

    result = push(fresh_containerd)
    assert result["status"] == "ok", result
    assert any("was damaged; it was rebuilt" in w for w in result["warnings"])  # type: ignore[attr-defined]
    assert blob.read_bytes() == good


# -- 9. the smaller findings -----------------------------------------------------------------------


def test_insecure_flag_warns_on_every_run(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    info = layout(tmp_path, 114)
    for _ in range(2):
        run = cli.push(
            info, containerd, "--name", "example.com/insecure:v1", "--insecure-skip-host-key-check"
        )
        assert run.code == 0
        assert "host keys are NOT verified" in run.err


def test_local_socket_errors_are_named_local(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    run = cli.run(
        "push", f"oci:{layout(tmp_path, 115).path}", "--name", "example.com/local:v1",
        "--node", cli.sshd.node, "-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts),
        "--containerd-socket", str(containerd.socket), "--json", env={"TMPDIR": str(deep)},
    )  # fmt: skip
    error = run.nodes[0]["error"]
    assert "cannot create the local end of the tunnel" in error and "TMPDIR" in error
    assert "connection to the node lost" not in error


def test_temporary_directories_of_killed_runs_are_swept(
    cli: Cli, containerd: Containerd, tmp_path: Path
) -> None:
    """Tunnel sockets, serve's spool and serve's copy of the user's registry logins: what a
    kill -9 left is removed by the next run; what a live run holds is not."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefixes = ("nodeload-", "nodeload-serve-", "nodeload-serve-auth-")
    stale = [tmpdir / f"{prefix}{dead.pid}-abcd" for prefix in prefixes]
    live = [tmpdir / f"{prefix}{os.getpid()}-abcd" for prefix in prefixes]  # this test process is alive
    for directory in (*stale, *live):
        directory.mkdir()
        (directory / "sock0").write_text("")
    run = cli.push(
        layout(tmp_path, 116), containerd, "--name", "example.com/sweep:v1", env={"TMPDIR": str(tmpdir)}
    )
    assert run.code == 0
    assert not any(d.exists() for d in stale) and all(d.exists() for d in live)
    for directory in live:
        shutil.rmtree(directory)


@pytest.mark.parametrize("when", ["connecting", "mid-blob"])
def test_containerd_that_stops_answering_hits_a_deadline(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path, when: str
) -> None:
    node = fresh_containerd
    big = write_layout(tmp_path / "big", [ImageSpec((117,), layer_size=48 << 20)])
    ingest = node.root / "root" / "io.containerd.content.v1.content" / "ingest"
    argv = [
        sys.executable, "-m", "nodeload", "push", f"oci:{big.path}", "--name", "example.com/hung:v1",
        "--node", cli.sshd.node, "-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts),
        "--containerd-socket", str(node.socket), "--timeout", "3", "--no-unpack",
    ]  # fmt: skip
    if when == "connecting":
        node.process.send_signal(signal.SIGSTOP)
    proc = subprocess.Popen(argv, cwd=REPO, env=dict(cli.env), stderr=subprocess.PIPE, text=True)
    try:
        if when == "mid-blob":
            deadline = time.monotonic() + 30
            while not (ingest.is_dir() and any(ingest.iterdir())):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.002)
            node.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        node.process.send_signal(signal.SIGCONT)
    assert proc.returncode == 1 and TRACEBACK not in err
    assert waited < 20
    if when == "connecting":
        assert "did not answer within 3s" in err
    else:
        assert "stopped taking data" in err and "no progress for 3s" in err


# -- 10. addresses from a cluster or an inventory are data, never arguments ------------------------

# What a compromised node's kubelet (or anyone who may patch nodes/status) can write as its address:
# with "ProxyCommand ssh -W %h:%p bastion" in the ssh config, the inner ssh would take the quoted
# word for an option and run its ProxyCommand on the pusher's machine.
_INJECTED = "10.0.0.9:22 '-oProxyCommand=sh -c \"id > {marker}\"' -oUser=x"


def _bastion_config(path: Path, sshd: Sshd) -> Path:
    """The common bastion form for every host but the test sshd's own address."""
    path.write_text(
        f"Host 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.client_key}\n"
        "  IdentitiesOnly yes\n  ProxyCommand none\n"
        "Host *\n  ProxyCommand ssh -W %h:%p bastion.invalid\n"
    )
    return path


def test_a_node_status_address_never_reaches_a_proxy_command(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig

    marker = tmp_path / "injected"
    cluster = [
        node("good", internal_ip="127.0.0.1"),
        node("evil", internal_ip=_INJECTED.format(marker=marker)),
        node("evil-hostname", hostname="a;touch {marker}", internal_ip="127.0.0.1"),
    ]
    source = layout(tmp_path, 310)
    with FakeKubeApi(cluster) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kube", [api.token_context("dev", user="alice")])
        config = _bastion_config(tmp_path / "ssh_config", sshd)
        run = cli.run(
            "push", f"oci:{source.path}", "--name", "example.com/addresses:v1", "--all-nodes",
            "--kubeconfig", str(kubeconfig), "-F", str(config), "--known-hosts", str(sshd.known_hosts),
            "--containerd-socket", str(containerd.socket), "--json",
        )  # fmt: skip
    assert not marker.exists(), "a node's address ran a command on this machine"
    assert run.code == 1, run.err
    results = {r["node"]: r for r in run.nodes}
    assert results["good"]["status"] == "ok"
    assert results["evil-hostname"]["status"] == "ok"  # its InternalIP is used, not its Hostname
    evil = results["evil"]
    assert evil["status"] == "failed"
    assert "node evil" in evil["error"] and "status.addresses InternalIP" in evil["error"], evil["error"]
    assert "not an IP address" in evil["error"]
    assert evil["wire_bytes_sent"] in (None, 0)

    with FakeKubeApi(cluster) as api:  # the Hostname type is checked as a DNS name
        kubeconfig = write_kubeconfig(tmp_path / "kube2", [api.token_context("dev", user="alice")])
        run = cli.run(
            "push", f"oci:{source.path}", "--name", "example.com/addresses:v1", "--node", "evil-hostname",
            "--address-type", "Hostname", "--kubeconfig", str(kubeconfig), "-F", str(config), "--json",
        )  # fmt: skip
    (result,) = run.nodes
    assert run.code == 1 and "status.addresses Hostname" in result["error"], result
    assert not marker.exists()


def test_an_inventory_address_fails_its_host_alone(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    marker = tmp_path / "injected"
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[nodes]\n"
        f"good ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user=root\n"
        f"evil ansible_host='-oProxyCommand=touch {marker}' ansible_user=root\n"
        "jumpy ansible_host=127.0.0.1 ansible_ssh_common_args='-o ProxyJump=x;id'\n"
    )
    config = _bastion_config(tmp_path / "ssh_config", sshd)
    source = layout(tmp_path, 311)
    run = cli.run(
        "push", f"oci:{source.path}", "--name", "example.com/addresses:v2", "--inventory", str(inventory),
        "--all-nodes", "-F", str(config), "-i", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
        "--containerd-socket", str(containerd.socket), "--json",
    )  # fmt: skip
    assert not marker.exists()
    assert run.code == 1, run.err
    results = {r["node"]: r for r in run.nodes}
    assert results["good"]["status"] == "ok"
    assert "host 'evil'" in results["evil"]["error"] and "ansible_host" in results["evil"]["error"]
    assert "starts with '-'" in results["evil"]["error"]
    assert "host 'jumpy'" in results["jumpy"]["error"] and "ProxyJump" in results["jumpy"]["error"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--node", "-oProxyCommand=touch {marker}"], id="node-option"),
        pytest.param(["--node", "root@a$(touch {marker})"], id="node-substitution"),
        pytest.param(["--node", "127.0.0.1", "--ssh-user", "x`touch {marker}`"], id="ssh-user"),
        pytest.param(["--node", "127.0.0.1", "-J", "b;touch {marker}"], id="jump"),
    ],
)
def test_command_line_destinations_are_checked_before_connecting(
    cli: Cli, sshd: Sshd, tmp_path: Path, args: list[str]
) -> None:
    marker = tmp_path / "injected"
    config = _bastion_config(tmp_path / "ssh_config", sshd)
    source = layout(tmp_path, 312)
    run = cli.run("push", f"oci:{source.path}", "-F", str(config), *(a.format(marker=marker) for a in args))
    assert run.code == 2, (run.out, run.err)
    assert "cannot be an SSH destination" in run.err, run.err
    assert not marker.exists()


# -- 11. socket hints are paths, never lines of a node's answer ----------------------------------


def test_a_socket_hint_holding_a_newline_cannot_name_the_ctr_command(
    cli: Cli, containerd: Containerd, tmp_path: Path
) -> None:
    """On a node reached through ctr import (no forwarding, no relay program), the probe once
    echoed the hint it found, and a newline in it added a ``ctr=`` line of its own: the command
    nodeload then ran (as root, or under sudo -n)."""
    from tests.integration.nodes import path_without, start_sshd

    short = Path(tempfile.mkdtemp(prefix="nl-", dir="/tmp"))  # a unix socket's path is short
    name = f"nodeload-injected-{os.getpid()}"  # no "/" in a file name: made where sshd starts
    marker = Path(pwd.getpwuid(os.getuid()).pw_dir) / name  # sessions: the login's home directory
    hint = str(short / f"x\nctr=touch {name} #")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(hint)  # a node-local user's socket of that name
    relays = {"socat", "nc", "nc.openbsd", "nc.traditional", "netcat", "python3"}
    sshd = start_sshd(tmp_path / "sshd", forwarding=False, path=path_without(tmp_path / "bin", relays))
    try:
        inventory = tmp_path / "hosts.yml"
        host = {
            "ansible_host": "127.0.0.1",
            "ansible_port": sshd.port,
            "ansible_user": "root",
            "nodeload_containerd_socket": [hint, str(containerd.socket)],
        }
        inventory.write_text(json.dumps({"all": {"hosts": {"node": host}}}))  # JSON is YAML
        run = cli.run(
            "push", f"oci:{layout(tmp_path, 320).path}", "--name", "example.com/hint:v1",
            "--inventory", str(inventory), "--all-nodes", "-i", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--json",
        )  # fmt: skip
        assert not marker.exists(), "a socket's name became a command"
        (result,) = run.nodes
        assert run.code == 1 and "nodeload_containerd_socket" in result["error"], result
        assert "control characters" in result["error"]

        flag = cli.run(
            "push", f"oci:{layout(tmp_path, 321).path}", "--node", "x", "--containerd-socket", hint
        )
        assert flag.code == 2 and "cannot be a socket path" in flag.err, flag.err
    finally:
        sshd.stop()
        listener.close()
        shutil.rmtree(short)
        marker.unlink(missing_ok=True)


# -- 12. host-key settings come from the ssh config the connection reads -----------------------

# Without -F, ssh reads ~/.ssh/config and /etc/ssh/ssh_config, "~" being the home directory of the
# password database (OpenSSH ignores $HOME): nodeload resolves with ssh -G, so it reads the same.


def _home_with_config(tmp_path: Path, sshd: Sshd, *lines: str) -> Path:
    """A home directory whose ~/.ssh/config names the test sshd as "node", with ``lines`` added."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh_config(home / ".ssh" / "config", sshd, *lines)
    return home


def _run_at_home(cli: Cli, home: Path, *args: str) -> Run:
    """``nodeload ARGS`` for a user whose home is ``home``: OpenSSH takes the home directory from
    the password database, not $HOME, so this user's entry says so, in a mount namespace of the
    command's own (the machine's /etc/passwd is untouched)."""
    user = pwd.getpwuid(os.getuid())
    passwd = home.parent / "passwd"
    passwd.write_text(f"{user.pw_name}:x:{user.pw_uid}:{user.pw_gid}::{home}:/bin/sh\n")
    wrapper = 'mount --bind "$1" /etc/passwd && shift && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, "sh", str(passwd),
         sys.executable, "-m", "nodeload", *args],
        cwd=REPO, env={**cli.env, "HOME": str(home)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_known_hosts_files_named_in_the_default_ssh_config_are_used(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    """Without -F, ~/.ssh/config is what ssh reads, for the connection and for its host keys."""
    home = _home_with_config(tmp_path, sshd, "UserKnownHostsFile ~/.ssh/known_hosts.d/prod")
    (home / ".ssh" / "known_hosts.d").mkdir()
    shutil.copy(sshd.known_hosts, home / ".ssh" / "known_hosts.d" / "prod")
    run = _run_at_home(
        cli, home, "push", f"oci:{layout(tmp_path, 330).path}", "--name", "example.com/kh:v1",
        "--node", "node", "--containerd-socket", str(containerd.socket), "--json",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert run.nodes[0]["status"] == "ok"


def test_accept_new_in_the_default_ssh_config_records_the_key(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    home = _home_with_config(tmp_path, sshd, "StrictHostKeyChecking accept-new")
    run = _run_at_home(
        cli, home, "push", f"oci:{layout(tmp_path, 331).path}", "--name", "example.com/kh:v2",
        "--node", "node", "--containerd-socket", str(containerd.socket), "--json",
    )  # fmt: skip
    assert run.code == 0, run.err
    recorded = (home / ".ssh" / "known_hosts").read_text()
    assert sshd.host_key_line.split()[2] in recorded


def test_a_changed_key_is_named_as_known_hosts_stores_it(
    cli: Cli, sshd: Sshd, containerd: Containerd, tmp_path: Path
) -> None:
    """The hint names the entry ssh-keygen -R must remove: [127.0.0.1]:PORT, not the alias."""
    home = _home_with_config(tmp_path, sshd)
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    algorithm, blob = other.with_suffix(".pub").read_text().split()[:2]
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {algorithm} {blob}\n")
    run = _run_at_home(
        cli, home, "push", f"oci:{layout(tmp_path, 332).path}", "--node", "node",
        "--containerd-socket", str(containerd.socket), "--json",
    )  # fmt: skip
    assert run.code == 1
    error = run.nodes[0]["error"]
    assert "HOST KEY CHANGED" in error and f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in error, error

    alias = _home_with_config(tmp_path / "alias", sshd, "HostKeyAlias node-alias")
    (alias / ".ssh" / "known_hosts").write_text(f"node-alias {algorithm} {blob}\n")
    run = _run_at_home(
        cli, alias, "push", f"oci:{layout(tmp_path, 333).path}", "--node", "node",
        "--containerd-socket", str(containerd.socket), "--json",
    )  # fmt: skip
    assert "ssh-keygen -R 'node-alias'" in run.nodes[0]["error"], run.nodes[0]["error"]
