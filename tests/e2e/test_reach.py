"""Every kind of node gets the image with deduplication: a sudo-only login, a hardened sshd, a node
with nothing but ctr, a node behind a bastion, and kind/k3d node containers reached with docker exec.

For each: the image runs with ``ctr run``, and a warm push (v1 then v2) sends only the changed
layer, checked against the node's content store and (over SSH) its network interface.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from nodeload.sandbox import K3S_CONTAINERD_SOCKET, NodeVariant, Sandbox
from tests.e2e.pushing import content_sizes, nodeload, run_image

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
WIRE_FIXED = 256 * 1024
SITUATIONS = {
    "node-1": ("sudo-only login", "ssh-exec:sudo:socat"),
    "node-2": ("AllowStreamLocalForwarding no", "ssh-exec:socat"),
    "node-3": ("no forwarding, no relay: ctr only", "ssh-exec:ctr-import"),
    "node-4": ("behind a bastion", "ssh-forward"),
    "node-7": ("no forwarding, OpenBSD nc relays", "ssh-exec:nc"),
}


@pytest.fixture(scope="module")
def fleet(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """Nodes as real fleets have them (see SITUATIONS), plus two that must fail clearly."""
    variants = [
        NodeVariant(login="ubuntu", sudo="nopasswd"),
        NodeVariant(stream_forwarding=False),
        NodeVariant(stream_forwarding=False, remove=("socat", "nc")),
        NodeVariant(internal=True),
        NodeVariant(login="ubuntu", sudo="password"),  # node-5: sudo asks for a password
        NodeVariant(stream_forwarding=False, remove=("socat", "nc", "ctr")),  # node-6: nothing at all
        NodeVariant(stream_forwarding=False, remove=("socat",)),  # node-7: nc is the relay left
    ]
    with Sandbox(variants, image=node_image, client=docker_client) as sb:
        yield sb


def _push(sandbox: Sandbox, image: str, alias: str, *args: str, config: str | None = None) -> dict[str, Any]:
    proc = nodeload(
        "push", image, "--node", alias, "--sudo", "-F", config or str(sandbox.ssh_config_path), "--json",
        *args, check=False,
    )  # fmt: skip
    (result,) = json.loads(proc.stdout)["nodes"]
    return dict(result)


@pytest.mark.parametrize("alias", list(SITUATIONS), ids=[s[0] for s in SITUATIONS.values()])
def test_each_situation_gets_the_image_with_dedup(
    fleet: Sandbox, app_images: dict[str, str], alias: str
) -> None:
    node = fleet.node(alias)
    cold = _push(fleet, app_images["v1"], alias)
    assert (cold["status"], cold["reach"]) == ("ok", SITUATIONS[alias][1]), cold
    assert cold["cri_indexed"] is True
    assert run_image(node, "docker.io/nodeload-e2e/app:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"

    before, rx = content_sizes(node), node.rx_bytes()
    bastion_rx = fleet.bastion.rx_bytes() if fleet.bastion is not None else 0
    warm = _push(fleet, app_images["v2"], alias)
    assert warm["status"] == "ok", warm
    arrived = {d: s for d, s in content_sizes(node).items() if d not in before}
    assert warm["bytes_sent"] == sum(arrived.values()), (arrived, warm)
    assert len(arrived) == 3, arrived  # the changed layer, the config, the manifest
    assert node.rx_bytes() - rx <= warm["bytes_sent"] * 1.05 + WIRE_FIXED
    if alias == "node-4":  # the bytes really came through the bastion
        assert fleet.bastion is not None and fleet.bastion.rx_bytes() - bastion_rx >= warm["bytes_sent"]
    assert run_image(node, "docker.io/nodeload-e2e/app:v2", f"t-{secrets.token_hex(4)}") == "hello from v2"


def test_sudo_that_wants_a_password_stops_that_node(fleet: Sandbox, app_images: dict[str, str]) -> None:
    result = _push(fleet, app_images["v1"], "node-5")
    assert result["status"] == "failed"
    assert "sudo on the node wants a password" in result["error"]
    assert content_sizes(fleet.node("node-5")) == {}


def test_a_bare_node_without_ctr_says_so(fleet: Sandbox, app_images: dict[str, str]) -> None:
    result = _push(fleet, app_images["v1"], "node-6")
    assert result["status"] == "failed"
    assert "no ctr" in result["error"] and "socat" in result["error"]
    assert content_sizes(fleet.node("node-6")) == {}


def test_a_bastion_with_an_unknown_host_key_is_refused(
    fleet: Sandbox, app_images: dict[str, str], tmp_path: Any
) -> None:
    known = tmp_path / "known_hosts"
    bastion_key = fleet.bastion.host_public_key() if fleet.bastion else ""
    known.write_text("".join(line + "\n" for line in fleet.known_hosts_path.read_text().splitlines()
                             if bastion_key not in line))  # fmt: skip
    config = tmp_path / "ssh_config"
    config.write_text(fleet.ssh_config_path.read_text().replace(str(fleet.known_hosts_path), str(known)))
    before = content_sizes(fleet.node("node-4"))
    result = _push(fleet, app_images["v1"], "node-4", "--name", "example.com/jump:v1", config=str(config))
    assert result["status"] == "failed"
    assert "jump host" in result["error"] and "is not in known_hosts" in result["error"]
    assert content_sizes(fleet.node("node-4")) == before


def test_jump_host_from_the_command_line(fleet: Sandbox, app_images: dict[str, str], tmp_path: Any) -> None:
    config = tmp_path / "ssh_config"  # the same aliases, without ProxyJump: -J does it
    config.write_text(fleet.ssh_config_path.read_text().replace("    ProxyJump bastion\n", ""))
    assert fleet.bastion is not None
    before = fleet.bastion.rx_bytes()
    result = _push(fleet, app_images["v1"], "node-4", "-J", "bastion", "--name", "example.com/j:v1",
                   config=str(config))  # fmt: skip
    assert (result["status"], result["reach"]) == ("ok", "ssh-forward"), result
    assert fleet.bastion.rx_bytes() - before >= result["wire_bytes_sent"]  # it went through the bastion


# -- node containers: kind and k3d ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters(docker_client: docker.DockerClient, node_image: str) -> Iterator[tuple[str, Sandbox]]:
    """Containers labelled the way kind and k3d label theirs (no sshd in any of them)."""
    name = f"nl{secrets.token_hex(3)}"
    kind = {"io.x-k8s.kind.cluster": name}
    k3d = {"k3d.cluster": name}
    control = {**kind, "io.x-k8s.kind.role": "control-plane"}
    variants = [
        NodeVariant(sshd=False, name=f"{name}-control-plane", labels=control),
        NodeVariant(sshd=False, name=f"{name}-worker", labels={**kind, "io.x-k8s.kind.role": "worker"}),
        NodeVariant(
            sshd=False, name=f"k3d-{name}-server-0", labels={**k3d, "k3d.role": "server"},
            containerd_socket=K3S_CONTAINERD_SOCKET, remove=("socat", "nc"),
        ),
        NodeVariant(
            sshd=False, name=f"k3d-{name}-agent-0", labels={**k3d, "k3d.role": "agent"},
            containerd_socket=K3S_CONTAINERD_SOCKET, remove=("socat", "nc"),
        ),
        NodeVariant(sshd=False, name=f"k3d-{name}-serverlb", labels={**k3d, "k3d.role": "loadbalancer"}),
    ]  # fmt: skip
    with Sandbox(variants, image=node_image, client=docker_client) as sb:
        yield name, sb


@pytest.mark.parametrize(
    ("flag", "members", "transport"),
    [
        ("--kind-cluster", ("{n}-control-plane", "{n}-worker"), "docker-exec:socat"),
        ("--k3d-cluster", ("k3d-{n}-agent-0", "k3d-{n}-server-0"), "docker-exec:ctr-import"),
    ],
)
def test_kind_and_k3d_nodes_through_docker_exec(
    clusters: tuple[str, Sandbox],
    app_images: dict[str, str],
    flag: str,
    members: tuple[str, ...],
    transport: str,
) -> None:
    name, sandbox = clusters
    nodes = {n.variant.name: n for n in sandbox.nodes}
    expected = [m.format(n=name) for m in members]

    def push(image: str) -> list[dict[str, Any]]:
        proc = nodeload("push", image, flag, name, "--all-nodes", "--json")
        results: list[dict[str, Any]] = json.loads(proc.stdout)["nodes"]
        return results

    cold = push(app_images["v1"])
    assert [r["node"] for r in cold] == expected  # the load balancer is not a node
    assert all(r["status"] == "ok" and r["reach"] == transport and r["cri_indexed"] for r in cold), cold
    before = {m: content_sizes(nodes[m]) for m in expected}
    warm = push(app_images["v2"])
    for result in warm:
        node = nodes[result["node"]]
        arrived = {d: s for d, s in content_sizes(node).items() if d not in before[result["node"]]}
        assert result["bytes_sent"] == sum(arrived.values()) and len(arrived) == 3
        container = f"t-{secrets.token_hex(4)}"
        assert run_image(node, "docker.io/nodeload-e2e/app:v2", container) == "hello from v2"
