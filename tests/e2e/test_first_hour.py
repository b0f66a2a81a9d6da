"""A newcomer's first hour (issue #25), with the real CLI against sandbox nodes and the local
Docker engine: no warning noise, errors before any node is contacted, one connect attempt per
node, and the same report whatever path a push took."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from nodeload.sandbox import NodeVariant, Sandbox
from tests.e2e.pushing import nodeload

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _push_args(sandbox: Sandbox, image: str, *aliases: str) -> list[str]:
    args = ["push", image, "-F", str(sandbox.ssh_config_path)]
    for alias in aliases or tuple(sandbox.aliases):
        args += ["--node", alias]
    return args


# -- quiet output ---------------------------------------------------------------------------------


def test_no_dependency_warnings_on_stderr(sandbox: Sandbox, app_images: dict[str, str]) -> None:
    """A push (asyncssh, grpc, the Docker SDK and aiohttp all loaded) prints no deprecation noise."""
    run = nodeload(*_push_args(sandbox, app_images["v1"], "node-1"))
    assert "Warning" not in run.stderr, run.stderr
    assert "DSA is deprecated" not in run.stderr
    # Control: the same dependencies do warn when warnings are asked for, so the check above can fail.
    loud = subprocess.run(
        [sys.executable, "-W", "default", "-m", "nodeload", "sandbox", "status", "--name", "no-such"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "CryptographyDeprecationWarning" in loud.stderr


# -- errors before work -----------------------------------------------------------------------------


def test_a_misspelt_image_fails_before_any_node_is_contacted(
    sandbox: Sandbox, app_images: dict[str, str]
) -> None:
    paused = sandbox.node("node-2")
    paused.get_wrapped_container().pause()  # a node contacted would hold the run for its timeout
    try:
        started = time.monotonic()
        run = nodeload(*_push_args(sandbox, "nodeload-e2e/apq:v1"), check=False)
        took = time.monotonic() - started
    finally:
        paused.get_wrapped_container().unpause()
    assert run.returncode == 2, run.stderr
    assert "nodeload-e2e/apq:v1" in run.stderr and "not in the local Docker engine" in run.stderr
    assert f"did you mean {app_images['v1']}" in run.stderr
    assert "node-" not in run.stdout + run.stderr  # no node was reported on
    assert took < 10


def test_one_connect_attempt_and_a_timeout_that_names_address_and_seconds(
    sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    ConnectTimeout 3\n\n" + sandbox.ssh_config_path.read_text())
    paused = sandbox.node("node-2")
    port = paused.ssh_port
    paused.get_wrapped_container().pause()  # TCP is accepted (docker-proxy), nothing answers
    try:
        args = ["push", app_images["v1"], "-F", str(config), "--node", "node-1", "--node", "node-2", "--json"]
        run = nodeload(*args, check=False)
    finally:
        paused.get_wrapped_container().unpause()
    assert run.returncode == 1
    ok, failed = json.loads(run.stdout)["nodes"]
    assert ok["status"] == "ok", ok
    assert f"127.0.0.1:{port} did not answer within 3 s" in failed["error"]
    assert failed["attempts"] == 1
    assert 3 <= failed["seconds"] < 5  # one attempt: a second would have taken 3 s more
    assert "docker save rather than docker push" not in run.stderr  # the node's own error says it once
    assert run.stderr.count("did not answer") <= 1


def test_an_unreachable_node_brings_no_export_notice_and_a_host_key_error_is_said_once(
    sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config"
    config.write_text(sandbox.ssh_config_path.read_text().replace(str(sandbox.known_hosts_path), str(empty)))
    run = nodeload("push", app_images["v2"], "-F", str(config), "--node", "node-1", check=False)
    assert run.returncode == 1
    assert "docker save rather than docker push" not in run.stderr
    assert run.stderr.count("is not in known_hosts") == 1, run.stderr


@pytest.mark.parametrize("export", ["auto", "save"])
def test_the_latest_warning_on_every_path(
    sandbox: Sandbox, docker_client: docker.DockerClient, app_images: dict[str, str], export: str
) -> None:
    docker_client.images.get(app_images["v1"]).tag("nodeload-e2e/floating", "latest")
    for _ in range(2):  # sent, then held already (export: none)
        run = nodeload(*_push_args(sandbox, "nodeload-e2e/floating", "node-1"), "--export", export)
        assert run.stderr.count("uses the :latest tag") == 1, run.stderr


def test_push_with_an_unknown_flag_shows_the_usage_of_push() -> None:
    run = nodeload("push", "app:v1", "--node", "n", "--bad-flag", check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("usage: nodeload push ")
    assert "nodeload push: error: unrecognized arguments: --bad-flag" in run.stderr


def test_gc_dry_run_names_the_nodes_it_looked_through(sandbox: Sandbox) -> None:
    run = nodeload(
        "gc", "--dry-run", "-F", str(sandbox.ssh_config_path), "--node", "node-1", "--node", "node-2"
    )
    assert "node-1, node-2" in run.stdout, run.stdout


# -- the same report whatever the path --------------------------------------------------------------


# How the node is written: through its forwarded containerd socket, or (no forwarding, no relay
# program on the node) by ctr import of an archive of what it lacks.
_WRITES = {
    "forwarded": NodeVariant(),
    "ctr-import": NodeVariant(stream_forwarding=False, remove=("socat", "nc")),
}


@pytest.mark.parametrize(
    ("export", "writes"), [("auto", "forwarded"), ("save", "forwarded"), ("save", "ctr-import")]
)
def test_json_fields_are_filled_on_every_path(
    docker_client: docker.DockerClient, node_image: str, app_images: dict[str, str], export: str, writes: str
) -> None:
    with Sandbox([_WRITES[writes]], image=node_image, client=docker_client) as fresh:
        args = [*_push_args(fresh, app_images["v1"]), "--json", "--export", export]
        reports = []
        for _ in range(2):  # sent, then held already
            [result] = json.loads(nodeload(*args).stdout)["nodes"]
            reports.append(result)
    sent, held = reports
    assert sent["status"] == held["status"] == "ok", sent
    assert held["bytes_sent"] == 0
    for result in (sent, held):
        assert result["platform"] == "linux/amd64", result
        assert result["digest"].startswith("sha256:")
        assert {"connect", "plan", "record"} <= set(result["timings"]), result["timings"]
    assert set(sent) == set(held)
    assert (sent["reach"] == "ssh-exec:ctr-import") == (writes == "ctr-import"), sent["reach"]
