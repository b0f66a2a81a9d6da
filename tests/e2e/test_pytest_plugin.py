"""nodeload's pytest plugin, as a user's pipeline meets it: real inner pytest runs (pytester, in a
subprocess, the plugin found through its pytest11 entry point) against real sandbox nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

from nodeload.sandbox.node import OWNER_PID_LABEL, SANDBOX_LABEL

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists()


def _orphans(client: docker.DockerClient) -> list[str]:
    """Sandbox containers whose owning process is gone (a session that did not clean up)."""
    containers = client.containers.list(all=True, filters={"label": SANDBOX_LABEL})
    return [c.name for c in containers if not _alive(c.labels.get(OWNER_PID_LABEL, "0"))]


def test_fixtures_and_assertions_pass_on_a_correct_push_and_fail_readably(
    pytester: pytest.Pytester, app_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    pytester.makeini("[pytest]\nnodeload_nodes = 2\n")
    pytester.makepyfile(
        f'''
        import dataclasses
        from nodeload.sandbox.assertions import assert_bytes, assert_on_node

        IMAGE = "{app_images["v1"]}"
        NAME = "docker.io/" + IMAGE

        def test_correct(nodeload_sandbox, nodeload_push):
            pushed = nodeload_push(IMAGE, "node-1", export="save")
            pushed.assert_ok()
            pushed.assert_bytes()
            pushed.assert_only_changed_layers()
            assert assert_on_node(nodeload_sandbox.node("node-1"), NAME) == "hello from v1"

        def test_a_node_that_lacks_the_image(nodeload_sandbox):
            assert_on_node(nodeload_sandbox.node("node-2"), NAME)

        def test_bytes_over_the_bound(nodeload_sandbox, nodeload_push):
            pushed = nodeload_push(IMAGE, "node-2", export="save")
            lied = dataclasses.replace(pushed.result("node-2"), bytes_sent=1000)
            assert_bytes(lied, pushed.before["node-2"], pushed.after["node-2"])
        '''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: no image docker.io/nodeload-e2e/app:v1 in namespace k8s.io of the node*",
            "*AssertionError: node-2 received * for a push that reported sending 1000 B*",
        ]
    )
    assert _orphans(docker_client) == []  # the inner session removed its nodes, failures and all


def test_the_compose_topology_comes_up_through_pytest_docker(
    pytester: pytest.Pytester, app_images: dict[str, str], docker_client: docker.DockerClient, node_image: str
) -> None:
    compose = pytester.path / "nodes"
    made = subprocess.run(
        [sys.executable, "-m", "nodeload", "sandbox", "compose", str(compose), "--nodes", "1"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    compose_file = made.stdout.strip()
    pytester.makeconftest(
        f'''
        import pytest
        from nodeload.sandbox.compose import compose_command, compose_setup

        @pytest.fixture(scope="session")
        def docker_compose_file():
            return "{compose_file}"

        @pytest.fixture(scope="session")
        def docker_compose_command():
            return compose_command()

        @pytest.fixture(scope="session")
        def docker_setup():
            return compose_setup()
        '''
    )
    pytester.makepyfile(
        f'''
        from nodeload import PushOptions, push
        from nodeload.transports.ssh_connect import SSHOptions

        def test_push_to_every_kind_of_compose_node(nodeload_compose):
            assert nodeload_compose.aliases == ("node-1", "node-k3s", "node-internal")
            ssh = SSHOptions(ssh_config=nodeload_compose.ssh_config_path)
            options = PushOptions.of(ssh=ssh, export="save")
            results = push("{app_images["v1"]}", list(nodeload_compose.aliases), options)
            assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
            sockets = {{r.socket for r in results}}
            assert sockets == {{"/run/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock"}}
        '''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=1)
    left = docker_client.containers.list(all=True, filters={"label": "nodeload.compose=node"})
    assert [c.name for c in left if c.name.startswith("pytest")] == []  # docker_services took them down


def test_the_example_pipeline_passes(app_images: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=REPO / "examples" / "ci-pipeline", capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
