"""The fault matrix: {SSH sessions killed on the node, containerd killed and restarted, the
node's link down for 5 s, ``kill -9`` of nodeload, the node's disk full} x {during a blob
write, during unpack, between unpack and the image record} x {an OCI layout, the Docker engine
as most pushes take it (its own ``docker push``, the default export), the Docker engine with
``--export save`` (layers go out while ``docker save`` still runs)}, each on a fresh sandbox
node. Every source meets the same assertions: one pipeline gives them the same guarantees.

Every cell checks what the README's "Failure behaviour" table promises:

- there is never an image record unless the image is complete (it runs);
- after the run, or after the rerun a user would do when it failed, the image runs;
- no nodeload lease is left on the node;
- the node's NIC received at most 1.1x the image (plus SSH/gRPC chatter) over run and rerun:
  nothing that arrived was sent again. A full disk is the exception: the upload that did not
  fit is thrown away (it holds the very space that ran out), so what arrived before is resent.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from nodeload import PushOptions, push
from nodeload.sandbox import NodeVariant, Sandbox
from nodeload.sandbox.faults import FAULTS, PHASES, FaultAt, free_disk, leases, node_fault
from nodeload.transports.ssh_connect import SSHOptions
from tests.e2e.pushing import content_sizes, image_names, nodeload, run_image

pytestmark = pytest.mark.e2e

NAME = "example.com/faults/app:v1"
CHATTER = 512 * 1024  # SSH handshakes (one per attempt), gRPC and TCP headers
DISK = "64m"


@pytest.fixture()
def node_sandbox_for(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient, node_image: str
) -> Iterator[Sandbox]:
    """A fresh node; for the disk-full cells, one whose containerd disk is a small tmpfs."""
    fault = request.node.callspec.params["fault"]
    variant = NodeVariant(disk=DISK) if fault == "disk-full" else NodeVariant()
    with Sandbox([variant], image=node_image, client=docker_client) as sb:
        yield sb


def _runs(sandbox: Sandbox) -> bool:
    return run_image(sandbox.node("node-1"), NAME, "t-faults") == "hello from v1"


# How the image reaches the push: its IMAGE argument and --export.
SOURCES = ("oci", "engine-auto", "engine-save")


@pytest.fixture()
def source(
    request: pytest.FixtureRequest, app_layout: tuple[Path, int], app_images: dict[str, str]
) -> tuple[str, str]:
    """The IMAGE argument and the --export of the cell's source."""
    kind = request.node.callspec.params["source_kind"]
    if kind == "oci":
        return f"oci:{app_layout[0]}:v1", "auto"
    return app_images["v1"], kind.removeprefix("engine-")


@pytest.mark.parametrize("source_kind", SOURCES, ids=SOURCES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_loses_nothing(
    fault: str,
    phase: str,
    source_kind: str,
    node_sandbox_for: Sandbox,
    source: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox, (image, export) = node_sandbox_for, source
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # docker save's layers, compressed anew
    node = sandbox.node("node-1")
    config = sandbox.ssh_config_path
    rx = node.rx_bytes()
    disk_before = _free_bytes(node) if fault == "disk-full" else 0
    options = PushOptions.of(name=NAME, export=export, ssh=SSHOptions(ssh_config=config))

    if fault == "nodeload-killed":
        killed = subprocess.run(
            [sys.executable, "-m", "nodeload.sandbox.faults", "--kill-at", phase, "--node", "node-1",
             "-F", str(config), "--name", NAME, "--export", export, image],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert killed.returncode == -9, killed.stderr
        first_ok = False
    else:
        sink = FaultAt(phase, node_fault(fault, node), after_bytes=4 << 20)
        (result,) = push(image, ["node-1"], options, progress=sink)
        assert sink.fired
        first_ok = result.ok
        if fault in ("ssh-killed", "containerd-restarted", "link-down"):
            # Survived within the run: retried (a lost session) or simply waited out (the link).
            assert result.ok, result.error
            if fault == "ssh-killed":
                assert result.attempts == 2  # the session was lost and made again
        if fault == "disk-full" and not result.ok:
            assert "disk" in (result.error or "")

    if fault == "disk-full":
        free_disk(node)  # what the user does (running a container needs some room, too)
    # Never a record of an incomplete image.
    if NAME in image_names(node):
        assert _runs(sandbox)

    if not first_ok and fault == "nodeload-killed":  # the user runs the same command again
        rerun = nodeload(
            "push", image, "--node", "node-1", "-F", str(config), "--name", NAME, "--export", export, "--json"
        )
        assert '"status": "ok"' in rerun.stdout
    elif not first_ok:
        # The same call again, from the same (still running) program: a lease the failed run
        # could not delete (a full disk refuses containerd's metadata writes too) goes now.
        (result,) = push(image, ["node-1"], options)
        assert result.ok, result.error
    assert _runs(sandbox)
    assert leases(node) == []
    image_bytes = sum(content_sizes(node).values())  # the fresh node holds this image alone
    budget = 1.1 * image_bytes + CHATTER
    if fault == "disk-full":
        budget += disk_before  # what fit before the disk was full is sent again
    assert node.rx_bytes() - rx <= budget


def _free_bytes(node: object) -> int:
    out = node.check_output(["df", "--output=avail", "-B1", "/var/lib/containerd"])  # type: ignore[attr-defined]
    return int(out.split()[-1])
