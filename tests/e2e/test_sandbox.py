"""The sandbox harness itself: nodes reachable over real SSH, CRI on, images runnable."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("testcontainers", reason="e2e tests need the 'sandbox' extra")

import asyncssh
import docker

from nodeload.sandbox import (
    SANDBOX_LABEL,
    LayerSpec,
    Sandbox,
    build_image,
    layer_diff_ids,
    sweep_leftovers,
)
from nodeload.sandbox.node import OWNER_HOST_LABEL, OWNER_PID_LABEL

pytestmark = pytest.mark.e2e

MESSAGE = "hello from a nodeload test image"


@pytest.fixture(scope="module")
def hello_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """A small busybox image whose command prints MESSAGE."""
    tag = f"nodeload-test/hello:{secrets.token_hex(4)}"
    build_image(docker_client, tag, MESSAGE, [LayerSpec(256 * 1024, seed=1)])
    yield tag
    docker_client.images.remove(tag, force=True)


def test_nodes_answer_over_ssh_with_generated_files(sandbox: Sandbox) -> None:
    for alias in sandbox.aliases:
        proc = subprocess.run(
            sandbox.ssh_command(alias, "ctr", "-n", "k8s.io", "version"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "Server:" in proc.stdout


def test_asyncssh_accepts_generated_known_hosts_and_key(sandbox: Sandbox) -> None:
    node = sandbox.nodes[0]

    async def uname() -> str:
        async with asyncssh.connect(
            node.ssh_host,
            port=node.ssh_port,
            username="root",
            client_keys=[str(sandbox.identity_path)],
            known_hosts=str(sandbox.known_hosts_path),
        ) as conn:
            result = await conn.run("uname -s", check=True)
            return str(result.stdout)

    assert asyncio.run(uname()).strip() == "Linux"


def test_nodes_have_distinct_host_keys(sandbox: Sandbox) -> None:
    keys = {node.host_public_key() for node in sandbox.nodes}
    assert len(keys) == len(sandbox.nodes)


def test_cri_plugin_loaded(sandbox: Sandbox) -> None:
    for node in sandbox.nodes:
        plugins = node.check_output(["ctr", "plugins", "ls"])
        cri = [line.split() for line in plugins.splitlines() if " cri " in line]
        assert cri and cri[0][0] == "io.containerd.grpc.v1" and cri[0][-1] == "ok"


def test_rx_bytes_counts_bytes_sent_over_ssh(sandbox: Sandbox) -> None:
    node, payload = sandbox.nodes[0], os.urandom(4 << 20)
    before = node.rx_bytes()
    subprocess.run(
        sandbox.ssh_command(sandbox.aliases[0], "cat >/dev/null"),
        input=payload,
        timeout=30,
        check=True,
    )
    received = node.rx_bytes() - before
    # Encryption and TCP/IP headers add a few percent, never less than the payload.
    assert len(payload) <= received < len(payload) * 1.2


def test_shape_limits_the_rate_towards_a_node(sandbox: Sandbox) -> None:
    node, alias, payload = sandbox.nodes[1], sandbox.aliases[1], os.urandom(2_500_000)

    def send() -> float:
        start = time.monotonic()
        subprocess.run(sandbox.ssh_command(alias, "cat >/dev/null"), input=payload, timeout=60, check=True)
        return time.monotonic() - start

    node.shape(10)  # 2.5 MB at 10 Mbit/s: about 2 s
    try:
        shaped = send()
    finally:
        node.unshape()
    assert shaped > 1.2
    assert send() < shaped / 2


def test_test_image_runs_in_docker(docker_client: docker.DockerClient, hello_image: str) -> None:
    output = docker_client.containers.run(hello_image, remove=True)
    assert output.decode().strip() == MESSAGE


def test_image_imported_into_node_runs_with_ctr(sandbox: Sandbox, hello_image: str) -> None:
    node = sandbox.nodes[0]
    node.ctr_import(hello_image)
    ref = f"docker.io/{hello_image}"
    images = node.check_output(["ctr", "-n", "k8s.io", "images", "ls"])
    managed = [line for line in images.splitlines() if line.startswith(ref + " ")]
    assert managed and "io.cri-containerd.image=managed" in managed[0]
    # Container ids must be unique across nodes: nested cgroups all live in the host's tree.
    run = ["ctr", "-n", "k8s.io", "run", "--rm", ref, f"t-{secrets.token_hex(4)}"]
    assert node.check_output(run).strip() == MESSAGE


def test_same_seed_gives_same_layers(docker_client: docker.DockerClient) -> None:
    tags = [f"nodeload-test/layers:{secrets.token_hex(4)}" for _ in range(3)]
    specs = [LayerSpec(1 << 20, seed=1), LayerSpec(1 << 20, seed=2), LayerSpec(1 << 20, seed=3)]
    changed = [specs[0], LayerSpec(1 << 20, seed=99), specs[2]]
    try:
        build_image(docker_client, tags[0], "first", specs)
        build_image(docker_client, tags[1], "second message, same layers", specs)
        build_image(docker_client, tags[2], "first", changed)
        first, same, other = (layer_diff_ids(docker_client, tag) for tag in tags)
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)
    assert first == same
    assert len(first) == 4  # busybox + 3 payload layers
    # Only the middle payload layer (index 2, after busybox) differs.
    assert [a == b for a, b in zip(first, other, strict=True)] == [True, True, False, True]


def test_sweep_removes_only_dead_owners(docker_client: docker.DockerClient) -> None:
    here = {SANDBOX_LABEL: "sweep-test", OWNER_HOST_LABEL: socket.gethostname()}
    gone = {**here, OWNER_PID_LABEL: "999999999"}  # above Linux's pid_max: never alive
    mine = {**here, OWNER_PID_LABEL: str(os.getpid())}
    orphan = docker_client.volumes.create(f"nodeload-sweep-{secrets.token_hex(3)}", labels=gone)
    alive = docker_client.volumes.create(f"nodeload-sweep-{secrets.token_hex(3)}", labels=mine)
    try:
        sweep_leftovers(docker_client)
        names = {v.name for v in docker_client.volumes.list(filters={"label": SANDBOX_LABEL})}
        assert orphan.name not in names
        assert alive.name in names
    finally:
        alive.remove(force=True)
