"""``push --persist``: pushes handed to a background session that keeps nodeload loaded and the
node's SSH connection open (nodeload.persist), against a real node.

Each test has a session directory of its own ($XDG_RUNTIME_DIR), so sessions never meet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import nodeload, run_image

pytestmark = pytest.mark.e2e

WIRE_FIXED = 256 * 1024


@dataclass
class Persisting:
    """A node, and the environment of a user whose pushes persist."""

    sandbox: Sandbox
    env: dict[str, str]
    runtime: Path

    def push(self, image: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        config = str(self.sandbox.ssh_config_path)
        return nodeload(
            "push", image, "--node", "node-1", "-F", config, "--json", *args, check=check, env=self.env
        )

    def ssh_connections(self) -> int:
        """Established SSH connections on the node."""
        out = self.sandbox.node("node-1").check_output(
            ["ss", "-Htn", "state", "established", "( sport = :22 )"]
        )
        return len(out.splitlines())


@pytest.fixture()
def persisting(node_sandbox: Sandbox, tmp_path: Path) -> Iterator[Persisting]:
    runtime = Path(tempfile.mkdtemp(prefix="nl-run-"))  # short: the socket path must fit sun_path
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NODELOAD_PERSIST": "2m",
    }
    yield Persisting(node_sandbox, env, runtime)
    nodeload("persist", "stop", check=False, env=env)
    shutil.rmtree(runtime, ignore_errors=True)


def test_pushes_go_through_one_session_and_one_connection(
    persisting: Persisting, app_images: dict[str, str]
) -> None:
    node = persisting.sandbox.node("node-1")
    cold = json.loads(persisting.push(app_images["v1"]).stdout)["nodes"][0]
    assert cold["status"] == "ok", cold
    (directory,) = [p for p in persisting.runtime.iterdir()]
    (sock,) = directory.glob("*.sock")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert persisting.ssh_connections() == 1  # the session keeps it open after the push

    rx = node.rx_bytes()
    warm = json.loads(persisting.push(app_images["v2"]).stdout)["nodes"][0]
    assert warm["status"] == "ok" and warm["cri_indexed"], warm
    assert 3 * 1024 * 1024 <= warm["bytes_sent"] < 4 * 1024 * 1024  # the changed layer, config, manifest
    assert node.rx_bytes() - rx <= 1.05 * warm["bytes_sent"] + WIRE_FIXED
    assert warm["wire_bytes_sent"] <= 1.05 * warm["bytes_sent"] + WIRE_FIXED  # this push's, not the session's
    assert persisting.ssh_connections() == 1  # the same connection: no new SSH handshake
    assert run_image(node, warm["name"], "t-persist") == "hello from v2"

    status = nodeload("persist", "status", env=persisting.env)
    assert status.stdout.startswith("running: ")
    nodeload("persist", "stop", env=persisting.env)
    deadline = time.monotonic() + 10
    while (list(directory.glob("*.sock")) or persisting.ssh_connections()) and time.monotonic() < deadline:
        time.sleep(0.2)  # the session answers, then closes its connections and its socket
    assert not list(directory.glob("*.sock"))
    assert persisting.ssh_connections() == 0  # stopping closed it
    assert nodeload("persist", "status", check=False, env=persisting.env).returncode == 1


def test_errors_and_exit_statuses_come_back_from_the_session(
    persisting: Persisting, app_images: dict[str, str]
) -> None:
    missing = persisting.push("oci:/nonexistent/layout:v1", check=False)
    assert missing.returncode == 1
    assert "nonexistent" in missing.stderr and json.loads(missing.stdout)["nodes"][0]["status"] == "failed"
    usage = persisting.push(app_images["v1"], "--parallel", "0", check=False)
    assert usage.returncode == 2 and "--parallel must be at least 1" in usage.stderr
    ok = persisting.push(app_images["v1"])  # the session is still there, and well
    assert json.loads(ok.stdout)["nodes"][0]["status"] == "ok"


def test_ctrl_c_interrupts_the_push_in_the_session_not_the_session(
    persisting: Persisting, app_images: dict[str, str]
) -> None:
    persisting.push(app_images["v1"])  # starts the session
    node = persisting.sandbox.node("node-1")
    config = str(persisting.sandbox.ssh_config_path)
    argv = [sys.executable, "-m", "nodeload", "push", app_images["v2"], "--node", "node-1", "-F", config]
    argv += ["--namespace", "elsewhere"]  # its new 3 MiB layer, at 2 Mbit/s: ~12 s
    node.shape(2)
    try:
        client = subprocess.Popen(argv, env=persisting.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3.0)  # handed over, and sending
        client.send_signal(signal.SIGINT)
        assert client.wait(timeout=30) == 130  # well before the push could have finished
        _, stderr = client.communicate()
        assert b"interrupted; rerun the same command to resume" in stderr
    finally:
        node.unshape()
    assert nodeload("persist", "status", env=persisting.env).returncode == 0  # the session goes on
    again = json.loads(persisting.push(app_images["v2"], "--namespace", "elsewhere").stdout)["nodes"][0]
    assert again["status"] == "ok", again  # the session took the next push as ever


def test_a_connection_dropped_between_pushes_is_made_again(
    persisting: Persisting, app_images: dict[str, str], app_layout: tuple[Path, int]
) -> None:
    first = json.loads(persisting.push(app_images["v1"]).stdout)["nodes"][0]
    assert first["status"] == "ok" and persisting.ssh_connections() == 1
    # The node drops it (sshd restarted, a NAT timeout...): its sshd session processes die.
    persisting.sandbox.node("node-1").check_output(["sh", "-c", "pkill -f '^sshd: root' || true"])
    time.sleep(0.5)
    assert persisting.ssh_connections() == 0
    # An OCI layout: nothing to ask the engine first, the node is the first thing the push touches.
    layout = f"oci:{app_layout[0]}:v1"
    again = json.loads(persisting.push(layout, "--name", "nodeload-e2e/layout:v1").stdout)["nodes"][0]
    assert again["status"] == "ok" and again["attempts"] == 1, again  # reconnected before pushing
    assert persisting.ssh_connections() == 1
