"""``nodeload nodes`` against real nodes of every reach kind, and a push through an inventory whose
node is reachable only through the ProxyJump of its ``ansible_ssh_common_args``.

The inventory is read as a user's would be: through ansible-core where it is installed (the dev
extra installs it), and the route through ``ssh -G``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.sandbox import K3S_CONTAINERD_SOCKET, NodeContainer, NodeVariant, Sandbox
from tests.e2e.pushing import content_sizes, nodeload, run_image
from tests.fakes.kube_agent import AgentPod, AgentPods
from tests.fakes.kube_api import FakeKubeApi, node, write_kubeconfig

pytestmark = pytest.mark.e2e

# Inventory host -> (sandbox variant, the transport --check must report).
_RUN = secrets.token_hex(3)
KINDS = {
    "forward": (NodeVariant(), "ssh-forward"),
    "sudo-only": (NodeVariant(login="ubuntu", sudo="nopasswd"), "ssh-exec:sudo:socat"),
    "ctr-only": (NodeVariant(stream_forwarding=False, remove=("socat", "nc")), "ssh-exec:ctr-import"),
    "behind-bastion": (NodeVariant(internal=True), "ssh-forward"),
    "kind-like": (NodeVariant(sshd=False, name=f"nl-{_RUN}-kind"), "docker-exec:socat"),
    "k3d-like": (
        NodeVariant(
            sshd=False, name=f"nl-{_RUN}-k3d", containerd_socket=K3S_CONTAINERD_SOCKET, remove=("socat", "nc")
        ),
        "docker-exec:ctr-import",
    ),
}


@pytest.fixture(scope="module")
def fleet(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    variants = [variant for variant, _ in KINDS.values()]
    with Sandbox(variants, image=node_image, client=docker_client) as sb:
        yield sb


def _by_kind(fleet: Sandbox) -> dict[str, NodeContainer]:
    return dict(zip(KINDS, fleet.nodes, strict=True))


def _inventory(fleet: Sandbox, path: Path) -> Path:
    """Every node of the fleet as an Ansible inventory: the bastion only in an ssh arg."""
    nodes, bastion = _by_kind(fleet), fleet.bastion
    assert bastion is not None and fleet.network is not None
    key = fleet.identity_path
    lines = ["[ssh]"]
    for kind in ("forward", "sudo-only", "ctr-only"):
        member = nodes[kind]
        become = " ansible_become=yes" if member.variant.login != "root" else ""
        lines.append(
            f"{kind} ansible_host={member.ssh_host} ansible_port={member.ssh_port} "
            f"ansible_user={member.variant.login}{become}"
        )
    internal = nodes["behind-bastion"]
    lines.append(
        f"behind-bastion ansible_host={internal.address(fleet.network)} ansible_port=22 ansible_user=root "
        f"ansible_ssh_common_args='-o ProxyJump=root@{bastion.ssh_host}:{bastion.ssh_port}'"
    )
    lines += ["[ssh:vars]", f"ansible_ssh_private_key_file={key}", "[containers]"]
    lines.append(f"kind-like ansible_connection=docker ansible_host={nodes['kind-like'].variant.name}")
    lines.append(
        f"k3d-like ansible_connection=community.docker.docker ansible_host={nodes['k3d-like'].variant.name} "
        f"nodeload_containerd_socket={K3S_CONTAINERD_SOCKET}"
    )
    path.write_text("\n".join(lines) + "\n")
    return path


def _nodes(*args: str, ok: bool = True) -> dict[str, Any]:
    proc = nodeload("nodes", *args, "--json", check=ok)
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


@pytest.fixture()
def empty_ssh_config(fleet: Sandbox, tmp_path: Path) -> Path:
    """The ssh config of a user whose key opens every machine (the bastion included: ssh gives a
    jump host no -o IdentityFile of the node's, and neither does Ansible), and nothing else."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {fleet.identity_path}\n  IdentitiesOnly yes\n")
    return config


def test_check_reaches_every_kind_of_node(fleet: Sandbox, tmp_path: Path, empty_ssh_config: Path) -> None:
    inventory = _inventory(fleet, tmp_path / "hosts.ini")
    document = _nodes(
        "--inventory", str(inventory), "--all-nodes", "--check", "-F", str(empty_ssh_config),
        "--known-hosts", str(fleet.known_hosts_path),
    )  # fmt: skip
    assert document["inventory_reader"] == "ansible-inventory"
    found = {entry["node"]: entry for entry in document["nodes"]}
    assert set(found) == set(KINDS)
    for kind, (_, transport) in KINDS.items():
        entry = found[kind]
        assert entry["ok"], entry
        check = entry["check"]
        assert check["reachable"] and check["reach"] == transport, (kind, check)
        assert re.match(r"v?\d+\.\d+", check["containerd_version"]), check
        hinted = K3S_CONTAINERD_SOCKET if kind == "k3d-like" else "/run/containerd/containerd.sock"
        assert check["socket"] == hinted, check
    behind = found["behind-bastion"]["ssh"]
    assert [(j["hostname"], j["port"], j["user"]) for j in behind["jumps"]] == [
        (fleet.bastion.ssh_host, fleet.bastion.ssh_port, "root")  # type: ignore[union-attr]
    ]
    assert behind["resolver"] == "openssh"
    assert found["sudo-only"]["sudo"] is True
    # Nothing was written: no content anywhere.
    assert all(content_sizes(member) == {} for member in fleet.nodes)


def test_push_through_the_inventory_proxyjump(
    fleet: Sandbox, app_images: dict[str, str], tmp_path: Path, empty_ssh_config: Path
) -> None:
    """The node is on a network only the bastion reaches; the bastion carries the session, and
    the node's sshd sees it come from the bastion, never from this machine."""
    inventory = _inventory(fleet, tmp_path / "hosts.ini")
    internal, bastion = _by_kind(fleet)["behind-bastion"], fleet.bastion
    assert bastion is not None and fleet.network is not None
    before = bastion.rx_bytes()
    name = f"example.com/jumped:{secrets.token_hex(3)}"
    proc = nodeload(
        "push", app_images["v1"], "--inventory", str(inventory), "--node", "behind-bastion", "--name", name,
        "-F", str(empty_ssh_config), "--known-hosts", str(fleet.known_hosts_path), "--json",
    )  # fmt: skip
    (result,) = json.loads(proc.stdout)["nodes"]
    assert (result["status"], result["reach"]) == ("ok", "ssh-forward"), result
    assert bastion.rx_bytes() - before >= result["bytes_sent"] > 0  # the bytes came through the bastion
    logins = re.findall(r"Accepted publickey for root from (\S+)", _logs(internal))
    assert logins and set(logins) == {bastion.address(fleet.network)}, logins
    assert run_image(internal, name, f"t-{secrets.token_hex(4)}") == "hello from v1"


def test_dry_run_shows_the_route_and_pushes_nothing(
    fleet: Sandbox, app_images: dict[str, str], tmp_path: Path, empty_ssh_config: Path
) -> None:
    inventory = _inventory(fleet, tmp_path / "hosts.ini")
    proc = nodeload(
        "push", app_images["v1"], "--inventory", str(inventory), "--limit", "behind-bastion", "--dry-run",
        "-F", str(empty_ssh_config), "--known-hosts", str(fleet.known_hosts_path),
    )  # fmt: skip
    assert "jump         root@127.0.0.1:" in proc.stdout, proc.stdout
    assert "resolved by  ssh -G (OpenSSH)" in proc.stdout


def test_check_reaches_a_node_through_its_agent(
    docker_client: docker.DockerClient, node_image: str, tmp_path: Path
) -> None:
    with Sandbox(1, image=node_image, client=docker_client) as sb:
        api = FakeKubeApi([node("node-1")])  # no address at all: the agent
        agents = AgentPods(api)
        agents.add(
            AgentPod(
                "nodeload-agent-1x7k2", "node-1", ["ssh", "-F", str(sb.ssh_config_path), "-T", "node-1", "--"]
            )
        )
        with api:
            kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [api.token_context("prod", user="alice")])
            document = _nodes("--kubeconfig", str(kubeconfig), "--all-nodes", "--check")
    (entry,) = document["nodes"]
    assert entry["ok"] and entry["reach"] == "agent", entry
    assert (
        entry["kubernetes"]["context"] == "prod" and "no InternalIP" in entry["kubernetes"]["instead_of_ssh"]
    )
    assert entry["check"]["reach"] == "agent-exec:socat", entry


def test_an_unresolvable_node_fails_the_command(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host broken\n  Port notanumber\n")
    proc = nodeload("nodes", "--node", "broken", "-F", str(config), "--json", check=False)
    assert proc.returncode != 0


def _logs(member: NodeContainer) -> str:
    logs: bytes = member.get_wrapped_container().logs()
    return logs.decode(errors="replace")
