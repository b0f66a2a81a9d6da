"""Throwaway nodes outside pytest: ``nodeload sandbox up|status|down`` (and ``python -m
nodeload.sandbox``), and ``make demo`` on top of it, run as a user runs them. What they claim is
checked with OpenSSH itself (``ssh -F`` the written files, host keys verified), the Docker engine
and a real push."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from nodeload.sandbox import sweep_leftovers
from nodeload.sandbox.node import KEPT_LABEL

pytestmark = pytest.mark.e2e


def _run(*argv: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture()
def user_env(tmp_path: Path, node_image: str) -> dict[str, str]:
    """The user's environment, with a cache directory of this test's own (where sandboxes keep
    their files); the node image is the session's (found by its tag, not rebuilt)."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _ssh(config: str, alias: str, *command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run("ssh", "-F", config, alias, *command, env=env, timeout=60)


def test_up_status_down_with_stable_ports_and_files_ssh_reads(
    user_env: dict[str, str], docker_client: docker.DockerClient, app_images: dict[str, str]
) -> None:
    name = f"e2e-{os.getpid()}"
    sandbox = [sys.executable, "-m", "nodeload.sandbox"]
    up = _run(
        *sandbox,
        "up",
        "--name",
        name,
        "--nodes",
        "2",
        "--variant",
        "plain",
        "--variant",
        "sudo",
        env=user_env,
    )
    try:
        assert up.returncode == 0, up.stderr
        config = up.stdout.strip()
        assert config == str(
            Path(user_env["XDG_CACHE_HOME"]) / "nodeload" / "sandboxes" / name / "ssh_config"
        )
        assert f"ssh -F {config} node-1" in up.stderr  # the commands printed can be run as they are
        assert f"-F {config} --node node-1 --node node-2" in up.stderr

        # OpenSSH reads the files as written, host keys verified (StrictHostKeyChecking yes).
        assert _ssh(config, "node-1", "ctr", "version", env=user_env).returncode == 0
        assert _ssh(config, "node-2", "id", "-un", env=user_env).stdout.strip() == "ubuntu"  # --variant sudo

        status = _run(*sandbox, "status", "--name", name, "--json", env=user_env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert [c["state"] for c in report["containers"]] == ["running", "running"]
        ports = report["ports"]

        # A docker restart keeps the ports (fixed, not ephemeral) and what ssh knows of the node.
        container = docker_client.containers.get(report["containers"][0]["container"])
        container.restart(timeout=5)
        container.reload()
        assert container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"] == str(ports["node-1"])
        for _ in range(60):
            if _ssh(config, "node-1", "ctr", "version", env=user_env).returncode == 0:
                break
        else:
            pytest.fail("node-1 did not answer over SSH after docker restart")

        # Nothing sweeps them: not this nodeload's sweep, not one of a test session that died.
        sweep_leftovers(docker_client)
        assert len(docker_client.containers.list(filters={"label": f"{KEPT_LABEL}={name}"})) == 2

        pushed = _run(
            sys.executable, "-m", "nodeload", "push", app_images["v1"], "-F", config, "--node", "node-1",
            "--node", "node-2", "--sudo", "--json", env=user_env,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        assert [n["status"] for n in json.loads(pushed.stdout)["nodes"]] == ["ok", "ok"]

        again = _run(*sandbox, "up", "--name", name, env=user_env)
        assert again.returncode == 1 and f"sandbox {name} is up already" in again.stderr
    finally:
        down = _run(*sandbox, "down", "--name", name, env=user_env)
    assert down.returncode == 0, down.stderr
    selector = {"label": f"{KEPT_LABEL}={name}"}
    assert docker_client.containers.list(all=True, filters=selector) == []
    assert docker_client.volumes.list(filters=selector) == []
    assert not Path(config).parent.exists()
    gone = _run(*sandbox, "status", "--name", name, env=user_env)
    assert gone.returncode == 1 and f"no sandbox {name} is up" in gone.stderr


def test_the_demo_prints_help_without_running(
    user_env: dict[str, str], docker_client: docker.DockerClient
) -> None:
    run = _run(sys.executable, "-m", "nodeload.sandbox.demo", "--help", env=user_env, timeout=60)
    assert run.returncode == 0
    assert run.stdout.startswith("usage: python -m nodeload.sandbox.demo")
    assert "--keep" in run.stdout
    assert docker_client.containers.list(all=True, filters={"label": f"{KEPT_LABEL}=demo"}) == []


def test_the_demo_numbers_its_steps_compares_and_keeps_nodes_whose_commands_work(
    user_env: dict[str, str], docker_client: docker.DockerClient
) -> None:
    run = _run(sys.executable, "-m", "nodeload.sandbox.demo", "--keep", env=user_env, timeout=600)
    try:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        out = run.stdout
        steps = [int(n) for n in re.findall(r"^(\d+)\. ", out, re.MULTILINE)]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 6, steps
        commands = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("$ ")]
        config = str(Path(user_env["XDG_CACHE_HOME"]) / "nodeload" / "sandboxes" / "demo" / "ssh_config")
        for command in commands:
            if " push " in command or command.startswith("ssh ") or "| ssh " in command:
                assert f"-F {config}" in command, command
        assert "docker save | ssh | ctr import" in out
        nodeload_rx, usual_rx = _comparison(out)
        assert usual_rx > 5 * nodeload_rx  # the whole image again, against the changed layer
        assert "wall time" in out and re.search(r"done in \d+\.\ds", out)
        # Kept: the commands it printed last run as they are.
        push = next(c for c in commands if " push nodeload-demo/app:v1 " in c and c.endswith("--node node-2"))
        again = _run(*shlex.split(push), "--json", env=user_env)
        assert again.returncode == 0, again.stderr
        assert [n["bytes_sent"] for n in json.loads(again.stdout)["nodes"]] == [0, 0]
    finally:
        down = _run(sys.executable, "-m", "nodeload", "sandbox", "down", "--name", "demo", env=user_env)
    assert down.returncode == 0
    assert docker_client.containers.list(all=True, filters={"label": f"{KEPT_LABEL}=demo"}) == []


def _comparison(out: str) -> tuple[float, float]:
    """The node rx of nodeload and of the usual way, from the demo's comparison table."""
    units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}

    def rx(label: str) -> float:
        match = re.search(re.escape(label) + r"\s*│\s*([\d.]+) (B|KiB|MiB|GiB)", out)
        assert match, out
        return float(match.group(1)) * units[match.group(2)]

    return rx("nodeload push"), rx("docker save | ssh | ctr import")
