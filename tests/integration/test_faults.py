"""Faults during a real push (a real containerd and sshd on 127.0.0.1): the session is retried and
resumed, a killed or interrupted run leaves nothing that stays, ``nodeload gc`` reclaims the
rest without touching a live push's, and concurrent runs do not disturb each other.

What the node holds is read independently of nodeload: ``ctr`` for leases and images, the
content store's ingest directory on disk for unfinished uploads.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nodeload import PushOptions, push
from nodeload.containerd.client import ContainerdClient
from nodeload.leftovers import run_labels
from nodeload.sandbox.faults import FaultAt
from nodeload.transports.ssh_connect import SSHOptions
from tests.integration.cli import REPO, Cli, images, layout
from tests.integration.nodes import Containerd, Sshd, start_containerd
from tests.integration.test_push_cli import _big_layout

pytestmark = pytest.mark.integration

BIG = 192 * 1024 * 1024


def _leases(node: Containerd) -> list[str]:
    out = node.ctr("leases", "ls", "-q")
    return [lease for lease in out.split() if lease.startswith("nodeload-")]


def _ingests(node: Containerd) -> dict[str, int]:
    """Unfinished uploads on disk: ref -> bytes received."""
    root = node.root / "root" / "io.containerd.content.v1.content" / "ingest"
    found = {}
    for entry in root.glob("*"):
        try:
            found[(entry / "ref").read_text().split("/")[-1]] = (entry / "data").stat().st_size
        except FileNotFoundError:
            continue  # committed (or aborted) while we looked
    return found


def _options(sshd: Sshd, node: Containerd, **kw: object) -> PushOptions:
    ssh = SSHOptions(identity=sshd.client_key, known_hosts=sshd.known_hosts)
    return PushOptions.of(socket=str(node.socket), ssh=ssh, **kw)


def _push_cli(cli: Cli, source: str, node: Containerd, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "nodeload", "push", source, "--node", cli.sshd.node, "--json"]
    argv += ["-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts)]
    argv += ["--containerd-socket", str(node.socket), *args]
    return subprocess.Popen(
        argv, cwd=REPO, env=dict(cli.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _when(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _gc(cli: Cli, node: Containerd, *args: str) -> dict[str, object]:
    login = ["-i", str(cli.sshd.client_key), "--known-hosts", str(cli.sshd.known_hosts)]
    run = cli.run(
        "gc", "--node", cli.sshd.node, *login, "--containerd-socket", str(node.socket), "--json", *args
    )
    assert run.code == 0, run.err
    (report,) = json.loads(run.out)["nodes"]
    return dict(report)


# -- retried within the run ------------------------------------------------------------------


def test_a_containerd_restart_mid_blob_is_retried_and_resumed(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    _big_layout(tmp_path / "big", 64 << 20)

    def restart() -> None:
        node.process.kill()
        node.process.wait()
        node.process = start_containerd(node.root).process  # the same state and socket

    sink = FaultAt("write", lambda: threading.Thread(target=restart).start(), after_bytes=16 << 20)
    (result,) = push(
        f"oci:{tmp_path / 'big'}:big",
        [sshd.node],
        _options(sshd, node, name="x.io/restart:v1"),
        progress=sink,
    )

    assert result.ok, result.error
    # Through the same SSH connection gRPC may reach the new containerd by itself (the write
    # resumes in place), or the session is lost and reconnected: either way nothing is resent.
    assert result.attempts in (1, 2)
    # The interrupted blob went on from the node's offset: its first 16 MiB were not sent again
    # (and they are this run's bytes, not "resumed" from an earlier run).
    assert (64 << 20) <= result.bytes_sent < (64 << 20) + (8 << 20)
    assert result.bytes_resumed == 0
    assert "x.io/restart:v1" in images(node)
    assert _leases(node) == [] and _ingests(node) == {}


def test_killed_ssh_sessions_are_retried_until_the_retries_are_spent(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 61, ref="v1", name="x.io/ssh-killed:v1")
    kill = ["pkill", "-KILL", "-P", str(sshd.process.pid)]  # the per-connection sshd processes

    sink = FaultAt("unpack", lambda: subprocess.run(kill, check=False))
    (result,) = push(f"oci:{info.path}:v1", [sshd.node], _options(sshd, fresh_containerd), progress=sink)
    assert result.ok and result.attempts == 2, result.error
    assert result.bytes_sent == sum(len(data) for data in info.blobs.values())  # nothing sent twice

    again = FaultAt("write", lambda: subprocess.run(kill, check=False), after_bytes=1)
    other = layout(tmp_path, 62, ref="v1", name="x.io/ssh-killed:v2")
    (failed,) = push(
        f"oci:{other.path}:v1", [sshd.node], _options(sshd, fresh_containerd, retries=0), progress=again
    )
    assert not failed.ok
    assert "attempt 1 of 1" in (failed.error or "") and "rerun to resume" in (failed.error or "")
    assert "x.io/ssh-killed:v2" not in images(fresh_containerd)


# -- runs that cannot clean up after themselves ----------------------------------------------


def test_kill_9_leaves_a_lease_that_the_next_run_or_gc_reclaims(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    _big_layout(tmp_path / "big", BIG)
    source = f"oci:{tmp_path / 'big'}:big"
    killed = _killed_mid_blob(cli, node, source, "x.io/killed:v1")
    (lease,) = _leases(node)

    listed = _gc(cli, node, "--dry-run")
    kinds = {(item["kind"], item["id"]) for item in listed["reclaimed"]}  # type: ignore[attr-defined]
    assert kinds == {("lease", lease)}  # the upload is younger than an hour: maybe a live push's
    assert _leases(node) == [lease] and _ingests(node)  # a dry run changes nothing

    # The rerun takes the dead run's upload over before removing its lease, and resumes it.
    rerun = cli.push_ok(source, node, "--no-unpack", "--name", "x.io/killed:v1")
    assert rerun["bytes_resumed"] >= killed
    assert _leases(node) == [] and _ingests(node) == {}

    # Without a rerun, gc removes the lease, and containerd then collects the run's upload.
    _big_layout(tmp_path / "big2", BIG)
    _killed_mid_blob(cli, node, f"oci:{tmp_path / 'big2'}:big", "x.io/killed:v2")
    (swept,) = _gc(cli, node)["reclaimed"]  # type: ignore[misc]
    assert swept["kind"] == "lease" and "is gone" in swept["reason"]
    assert _leases(node) == []
    _when(lambda: _ingests(node) == {}, timeout=10)


def _killed_mid_blob(cli: Cli, node: Containerd, source: str, name: str) -> int:
    """Start a push and kill -9 it once 16 MiB of a blob arrived; how much had arrived."""
    run = _push_cli(cli, source, node, "--no-unpack", "--name", name)
    _when(lambda: any(size > 16 << 20 for size in _ingests(node).values()))
    run.kill()
    run.wait()
    return max(_ingests(node).values())


def test_an_upload_idle_past_the_guard_is_aborted(cli: Cli, fresh_containerd: Containerd) -> None:
    node = fresh_containerd

    # An upload no lease holds (as a client that wrote without one leaves it), idle from now on.
    async def upload() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 4096

        client = ContainerdClient(f"unix:{node.socket}")
        stream = await client.open_ingest("nodeload-sha256:" + "0" * 64)
        await stream.append(chunks())
        stream.close()
        await client.close()

    asyncio.run(upload())
    assert list(_ingests(node).values()) == [4096]
    assert _gc(cli, node)["reclaimed"] == []  # younger than the default hour: maybe a live push's
    time.sleep(1.2)
    (item,) = _gc(cli, node, "--older-than", "1s")["reclaimed"]  # type: ignore[misc]
    assert (item["kind"], item["bytes"]) == ("ingest", 4096)
    assert _ingests(node) == {}


def test_a_lease_from_another_machine_is_kept_until_it_is_old(cli: Cli, fresh_containerd: Containerd) -> None:
    node = fresh_containerd
    node.ctr(
        "leases", "create", "--id", "nodeload-elsewhere", "nodeload.io/host=build-server", "nodeload.io/pid=1"
    )
    node.ctr("leases", "create", "--id", "someone-else", "purpose=pinning")
    assert _gc(cli, node)["reclaimed"] == []
    time.sleep(1.2)
    (item,) = _gc(cli, node, "--older-than", "1s")["reclaimed"]  # type: ignore[misc]
    assert item["id"] == "nodeload-elsewhere" and "build-server" in item["reason"]
    assert "someone-else" in node.ctr("leases", "ls", "-q").split()


def test_ctrl_c_exits_130_and_the_rerun_resumes(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    """Interrupted, a push keeps its lease (so containerd keeps the partial upload: deleting the
    lease would let its garbage collection take it); the rerun resumes inside the blob, adopts
    the upload and removes the interrupted run's lease."""
    node = fresh_containerd
    _big_layout(tmp_path / "big", BIG)
    run = _push_cli(cli, f"oci:{tmp_path / 'big'}:big", node, "--no-unpack", "--name", "x.io/int:v1")
    _when(lambda: any(size > 16 << 20 for size in _ingests(node).values()))
    run.send_signal(signal.SIGINT)
    assert run.wait(30) == 130
    assert "x.io/int:v1" not in images(node)
    assert len(_leases(node)) == 1
    node.collect_garbage()  # as containerd would, any time: the lease keeps the upload
    partial = max(_ingests(node).values())
    assert partial > 16 << 20

    rerun = _push_cli(cli, f"oci:{tmp_path / 'big'}:big", node, "--no-unpack", "--name", "x.io/int:v1")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    (result,) = json.loads(out)["nodes"]
    assert result["bytes_resumed"] >= partial
    assert result["bytes_sent"] <= BIG - partial + (1 << 20)
    assert _leases(node) == []
    assert "x.io/int:v1" in images(node)


def test_a_lease_this_program_could_not_delete_goes_with_its_next_push(
    sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    # What a run leaves when containerd refuses even the lease's deletion (a full disk): a lease
    # labelled with this process, which is still alive (a library caller, `nodeload serve`).
    node = fresh_containerd
    labels = [f"{key}={value}" for key, value in run_labels("x.io/left:v1", datetime.now(UTC)).items()]
    node.ctr("leases", "create", "--id", "nodeload-undeleted", *labels)
    info = layout(tmp_path, 8, ref="v1")
    (result,) = push(f"oci:{info.path}:v1", [sshd.node], _options(sshd, node, name="x.io/left:v1"))
    assert result.ok, result.error
    assert _leases(node) == []


# -- concurrent runs -----------------------------------------------------------------------------


@pytest.mark.parametrize("same_tag", [True, False])
def test_two_runs_at_once_both_succeed(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path, same_tag: bool
) -> None:
    node = fresh_containerd
    info = layout(tmp_path, 64, ref="v1")
    names = ["x.io/both:v1", "x.io/both:v1" if same_tag else "x.io/both:v2"]
    runs = [_push_cli(cli, f"oci:{info.path}:v1", node, "--name", name) for name in names]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert json.loads(out)["nodes"][0]["status"] == "ok"
    assert set(names) <= images(node)
    assert _leases(node) == [] and _ingests(node) == {}
    # Both together sent each blob once, or a little more where they raced for the same one.
    sent = sum(json.loads(out)["nodes"][0]["bytes_sent"] for out, _ in outputs)
    assert sent <= 2 * sum(len(d) for d in info.blobs.values())
