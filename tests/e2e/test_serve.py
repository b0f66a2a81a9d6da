"""``nodeload serve`` with real registry clients: ``docker push`` and ``skopeo copy`` straight into
sandbox nodes, no login step, layers deduplicated by the nodes themselves."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import content_sizes, image_names, run_image
from tests.helpers.oci import ImageSpec, write_layout

pytestmark = pytest.mark.e2e

WIRE_FIXED = 512 * 1024


def serve(sandbox: Sandbox, script: str, *aliases: str) -> tuple[int, dict[str, Any], str]:
    """``nodeload serve --json -- sh -c SCRIPT`` to the nodes; exit status, report, stderr."""
    argv = [sys.executable, "-m", "nodeload", "serve", "--json", "-F", str(sandbox.ssh_config_path)]
    for alias in aliases or sandbox.aliases:
        argv += ["--node", alias]
    proc = subprocess.run([*argv, "--", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def docker_push(local: str, repository: str) -> str:
    """A script that pushes a local Docker image into the endpoint, then forgets the temporary tag."""
    target = f"$NODELOAD_REGISTRY/{repository}"
    return (
        f"docker tag {local} {target} && docker push {target}; s=$?; docker rmi {target} >/dev/null; exit $s"
    )


def test_docker_push_lands_on_every_node_and_repeats_move_no_layers(
    sandbox: Sandbox, app_images: dict[str, str]
) -> None:
    status, report, err = serve(sandbox, docker_push(app_images["v1"], "served/app:v1"))
    assert status == 0, err
    assert all(n["status"] == "ok" for n in report["nodes"]), report
    for alias in sandbox.aliases:
        node = sandbox.node(alias)
        assert "io.cri-containerd.image=managed" in image_names(node)["docker.io/served/app:v1"]
        assert run_image(node, "docker.io/served/app:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"

    rx = {a: sandbox.node(a).rx_bytes() for a in sandbox.aliases}
    status, report, err = serve(sandbox, docker_push(app_images["v1"], "served/app:v1"))
    assert status == 0, err
    assert err.count("Layer already exists") >= 4  # the nodes answered every layer's HEAD
    for alias in sandbox.aliases:
        assert sandbox.node(alias).rx_bytes() - rx[alias] < WIRE_FIXED
    assert all(n["bytes_received"] == 0 for n in report["nodes"])

    before = {a: content_sizes(sandbox.node(a)) for a in sandbox.aliases}
    rx = {a: sandbox.node(a).rx_bytes() for a in sandbox.aliases}
    status, report, err = serve(sandbox, docker_push(app_images["v2"], "served/app:v2"))
    assert status == 0, err
    for node_report in report["nodes"]:
        alias = node_report["node"]
        arrived = {d: s for d, s in content_sizes(sandbox.node(alias)).items() if d not in before[alias]}
        assert len(arrived) == 3  # the changed layer, its config, its manifest
        assert sandbox.node(alias).rx_bytes() - rx[alias] <= sum(arrived.values()) * 1.05 + WIRE_FIXED
        container = f"t-{secrets.token_hex(4)}"
        assert run_image(sandbox.node(alias), "docker.io/served/app:v2", container) == "hello from v2"


def test_skopeo_copies_a_multi_platform_index(node_sandbox: Sandbox, tmp_path: Path) -> None:
    info = write_layout(
        tmp_path / "multi",
        [ImageSpec((41, 42), "linux/amd64"), ImageSpec((51, 52), "linux/arm64")],
        ref="v1",
    )
    assert info.index is not None
    script = f"skopeo copy --quiet --all --dest-tls-verify=false oci:{info.path}:v1 docker://$NODELOAD_REGISTRY/team/multi:v1"
    status, report, err = serve(node_sandbox, script)
    assert status == 0, err
    (result,) = report["nodes"][0]["images"]
    assert result["digest"] == info.index.digest and result["cri_indexed"] is True
    node = node_sandbox.node("node-1")
    listed = node.check_output(["ctr", "-n", "k8s.io", "images", "ls"])
    line = next(row for row in listed.splitlines() if row.startswith("docker.io/team/multi:v1 "))
    assert "linux/amd64" in line and "linux/arm64" in line  # the index kept its platforms
    assert set(info.blobs) <= set(content_sizes(node))


def test_the_wrapped_commands_status_is_returned(node_sandbox: Sandbox) -> None:
    status, report, _ = serve(
        node_sandbox, 'test -n "$NODELOAD_REGISTRY" && test -f "$REGISTRY_AUTH_FILE" && exit 3'
    )
    assert status == 3
    assert report["command_status"] == 3 and report["registry"].startswith("127.0.0.1:")


def test_a_node_that_fails_makes_a_successful_command_exit_1(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        sandbox.ssh_config_path.read_text() + "\nHost ghost\n    HostName 127.0.0.1\n    Port 1\n"
    )
    argv = [
        sys.executable,
        "-m",
        "nodeload",
        "serve",
        "--json",
        "-F",
        str(config),
        "--node",
        "node-1",
        "--node",
        "ghost",
    ]
    proc = subprocess.run([*argv, "--", "true"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    nodes = {n["node"]: n for n in json.loads(proc.stdout)["nodes"]}
    assert nodes["node-1"]["status"] == "ok" and nodes["ghost"]["status"] == "failed"
    assert "cannot connect" in nodes["ghost"]["errors"][0]
