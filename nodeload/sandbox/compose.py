"""The sandbox as a compose topology, for users who bring their test nodes up with compose.

``nodeload sandbox compose DIR`` writes ``DIR/docker-compose.yml`` and the SSH keys it uses:

- ``node-1`` ... ``node-N``: sshd + containerd + CRI, SSH published on 127.0.0.1;
- ``node-k3s``: the same with containerd where k3s puts it (``/run/k3s/containerd``);
- ``bastion``: an SSH jump host, and ``node-internal``, reachable only through it.

pytest-docker's ``docker_services`` fixture brings it up (``docker compose`` v2, or Debian's
``docker-compose`` 1.29 through its ``docker_compose_command`` fixture); the plugin's
``nodeload_compose`` fixture then waits for every node and writes the ssh_config and
known_hosts to reach them (the nodes' host keys are generated here and handed to them, so
host keys are verified as for real nodes).
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from nodeload.sandbox.node import DEFAULT_CONTAINERD_SOCKET, K3S_CONTAINERD_SOCKET, SSH_PORT, NodeVariant
from nodeload.sandbox.node_image import docker_client, ensure_node_image

COMPOSE_FILE = "docker-compose.yml"
IDENTITY = "id_ed25519"


def write_compose(directory: Path, *, nodes: int = 2, image: str | None = None) -> Path:
    """Write the compose file (and its keys) into ``directory``; the node image is built if needed.

    Returns:
        The compose file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    image = image or ensure_node_image(docker_client())
    user_key = asyncssh.generate_private_key("ssh-ed25519", comment="nodeload-compose")
    (directory / IDENTITY).write_bytes(user_key.export_private_key())
    (directory / IDENTITY).chmod(0o600)
    (directory / f"{IDENTITY}.pub").write_bytes(user_key.export_public_key())
    authorized = user_key.export_public_key().decode().strip()

    services: dict[str, Any] = {}
    host_keys: dict[str, str] = {}
    plan = [(f"node-{i}", NodeVariant(), True) for i in range(1, nodes + 1)]
    plan += [("node-k3s", NodeVariant(containerd_socket=K3S_CONTAINERD_SOCKET), True)]
    plan += [("bastion", NodeVariant(), True), ("node-internal", NodeVariant(), False)]
    for name, variant, published in plan:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_keys[name] = host_key.export_public_key().decode().split()[1]
        # The bastion is on both networks; node-internal only on the internal one.
        networks = {"node-internal": ["internal"], "bastion": ["default", "internal"]}.get(name)
        service = _service(image, variant, authorized, host_key, published, networks)
        # containerd's root on a volume of its own: overlayfs cannot live on the container's overlay.
        service["volumes"].append(f"{name}-containerd:/var/lib/containerd")
        services[name] = service
    document = {
        "version": "2.4",
        "services": services,
        "networks": {"internal": {"internal": True}},
        "volumes": {f"{name}-containerd": {} for name in services},
        "x-nodeload": {"host-keys": host_keys},
    }
    path = directory / COMPOSE_FILE
    path.write_text(
        "# Written by `nodeload sandbox compose`: throwaway nodes for tests (see nodeload.sandbox.compose).\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    return path


def _service(
    image: str,
    variant: NodeVariant,
    authorized: str,
    host_key: Any,
    published: bool,
    networks: list[str] | None,
) -> dict[str, Any]:
    name_env = {
        **variant.environment(),
        "NODELOAD_AUTHORIZED_KEY": authorized,
        "NODELOAD_HOST_KEY": base64.b64encode(host_key.export_private_key()).decode(),
    }
    service: dict[str, Any] = {
        "image": image,
        "environment": name_env,
        # What the sandbox does where --privileged is refused (see nodeload.sandbox.node).
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE"],
        "security_opt": ["seccomp=unconfined"],
        "tmpfs": ["/run:rw,exec,nosuid,nodev,mode=755"],
        # Not the sandbox label: compose takes these down itself (sweep_leftovers must not).
        "labels": {"nodeload.compose": "node"},
    }
    volumes = ["/sys/fs/cgroup:/sys/fs/cgroup:rw"]
    service["volumes"] = volumes
    if published:
        service["ports"] = [f"127.0.0.1::{SSH_PORT}"]
    if networks:
        service["networks"] = networks
    return service


@dataclass(frozen=True)
class ComposeNodes:
    """The compose nodes, up and ready, and the SSH files to reach them."""

    directory: Path
    ssh_config_path: Path
    aliases: tuple[str, ...]  # node-1 ... node-N, node-k3s, node-internal (through bastion)

    @classmethod
    def ready(cls, services: Any, compose_file: str | Path, timeout: float = 120.0) -> ComposeNodes:
        """Write ssh_config and known_hosts next to the file, then wait until every node answers
        over SSH as containerd (sshd up, the key accepted, containerd serving).

        ``services`` is pytest-docker's ``docker_services``.
        """
        path = Path(compose_file)
        document = yaml.safe_load(path.read_text())
        nodes = cls._write_ssh(path.parent, document, document["x-nodeload"]["host-keys"], services)
        for alias in nodes.aliases:
            socket = nodes.containerd_socket(alias)
            command = ["ssh", "-F", str(nodes.ssh_config_path), alias, "ctr", "--address", socket, "version"]

            def answers(command: list[str] = command) -> bool:
                return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0

            services.wait_until_responsive(check=answers, timeout=timeout, pause=0.5)
        return nodes

    @classmethod
    def _write_ssh(
        cls, directory: Path, document: dict[str, Any], host_keys: dict[str, str], services: Any
    ) -> ComposeNodes:
        identity = directory / IDENTITY
        known, entries, aliases = [], [], []
        for name, service in document["services"].items():
            if service.get("ports"):
                host, port = "127.0.0.1", int(services.port_for(name, SSH_PORT))
                known.append(f"[{host}]:{port} ssh-ed25519 {host_keys[name]}\n")
                jump = ""
            else:  # the internal node: its compose service name, resolved by the bastion
                host, port, jump = name, SSH_PORT, "    ProxyJump bastion\n"
                known.append(f"{name} ssh-ed25519 {host_keys[name]}\n")
            if name != "bastion":
                aliases.append(name)
            entries.append(
                f"Host {name}\n    HostName {host}\n    Port {port}\n    User root\n{jump}"
                f"    IdentityFile {identity}\n    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {directory / 'known_hosts'}\n    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n    LogLevel ERROR\n"
            )
        (directory / "known_hosts").write_text("".join(known))
        (directory / "ssh_config").write_text("\n".join(entries))
        return cls(directory, directory / "ssh_config", tuple(aliases))

    def containerd_socket(self, alias: str) -> str:
        """Where the node's containerd listens."""
        return K3S_CONTAINERD_SOCKET if alias == "node-k3s" else DEFAULT_CONTAINERD_SOCKET


def compose_command() -> str:
    """``docker compose`` (v2) where it works, else Debian's ``docker-compose`` (1.29): for
    pytest-docker's ``docker_compose_command`` fixture."""
    return "docker compose" if _has_compose_v2() else "docker-compose"


def compose_setup() -> list[str]:
    """The ``up`` command for pytest-docker's ``docker_setup`` fixture: compose 1.29 has no
    ``--wait`` (pytest-docker's default); the ``nodeload_compose`` fixture waits for the nodes."""
    return ["up --build --wait"] if _has_compose_v2() else ["up --build -d"]


def _has_compose_v2() -> bool:
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
