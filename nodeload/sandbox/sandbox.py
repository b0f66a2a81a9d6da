"""``Sandbox``: a few node containers plus the SSH files a user of real nodes would have."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh
import docker
import docker.errors

from nodeload.sandbox.node import (
    KEPT_LABEL,
    KEPT_OWNER_PID,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    SANDBOX_LABEL,
    SSH_PORT,
    NodeContainer,
    NodeVariant,
    new_session_id,
)
from nodeload.sandbox.node_image import BaseSource, docker_client, ensure_node_image

log = logging.getLogger(__name__)


class Sandbox:
    """N node containers reachable over SSH with a generated key, known_hosts and ssh_config.

    Example:
        >>> with Sandbox(nodes=2) as sandbox:
        ...     subprocess.run(sandbox.ssh_command("node-1", "ctr", "version"), check=True)
    """

    def __init__(
        self,
        nodes: int | Sequence[NodeVariant] = 2,
        *,
        image: str | None = None,
        client: docker.DockerClient | None = None,
        base: BaseSource = "auto",
        startup_timeout: float = 60.0,
        kept: str | None = None,
        directory: Path | None = None,
    ) -> None:
        """Configure (but do not start) a sandbox.

        Args:
            nodes: Number of node containers, or one variant per node (the ``nodes`` attribute
                then lists them, reachable as ``node-1``, ``node-2``...).
            image: Node image; built (or reused) with ``ensure_node_image`` when omitted.
            client: Docker client; a new one from the environment when omitted.
            base: Base of the node image when it has to be built (see ``ensure_node_image``).
            startup_timeout: Seconds each node may take to get sshd and containerd up.
            kept: The name of a sandbox that outlives this process (``nodeload sandbox up``):
                its containers are labelled with it, never swept as leftovers, restart with
                the engine, and keep the SSH ports they were given (a ``docker restart``
                does not move them), until ``nodeload sandbox down``.
            directory: Where the key pair, known_hosts and ssh_config go (created); default:
                a new temporary directory.
        """
        self.variants = [NodeVariant()] * nodes if isinstance(nodes, int) else list(nodes)
        if not self.variants:
            raise ValueError(f"a sandbox needs at least one node, not {nodes}")
        self.session = new_session_id()
        self.nodes: list[NodeContainer] = []
        self.aliases = [f"node-{i}" for i in range(1, len(self.variants) + 1)]
        # Nodes only reachable through a jump host share a network with this bastion.
        self.bastion: NodeContainer | None = None
        self.network: str | None = None
        self._image = image
        self._client = client
        self._base: BaseSource = base
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self.kept = kept
        self._directory = directory

    @property
    def directory(self) -> Path:
        """Temporary directory holding the key pair, known_hosts and ssh_config."""
        if self._dir is None:
            raise RuntimeError("the sandbox is not started")
        return self._dir

    @property
    def identity_path(self) -> Path:
        """Private key (ed25519, OpenSSH format) authorized on every node."""
        return self.directory / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """known_hosts with every node's host key as ``[127.0.0.1]:PORT ssh-ed25519 ...``."""
        return self.directory / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        """ssh_config with one ``Host node-N`` entry per node."""
        return self.directory / "ssh_config"

    def node(self, alias: str) -> NodeContainer:
        """Return the node behind an alias such as ``node-1``."""
        return self.nodes[self.aliases.index(alias)]

    def ssh_command(self, alias: str, *command: str) -> list[str]:
        """Return an ``ssh -F ssh_config ALIAS COMMAND...`` argv for subprocess."""
        return ["ssh", "-F", str(self.ssh_config_path), alias, *command]

    def start(self) -> Self:
        """Build the node image if needed, write the key pair and start the nodes in parallel.

        Raises:
            SandboxError: The node image could not be built or a node failed to start.
            TimeoutError: A node did not get ready in time.
        """
        image = self._image or ensure_node_image(self._client, base=self._base)
        if self._directory is not None:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=False)
            self._dir = self._directory
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="nodeload-sandbox-"))
        public_key = _write_key_pair(self.identity_path)
        if any(v.internal for v in self.variants):
            self.network = self._create_network()
            self.bastion = self._node(image, NodeVariant(), public_key)
        self.nodes = [
            self._node(image, v, public_key, self.network if v.internal else None) for v in self.variants
        ]
        starting = [*self.nodes, *([self.bastion] if self.bastion else [])]
        # Threads only wait on Docker and sockets; 2 cores are plenty.
        with ThreadPoolExecutor(max_workers=len(starting)) as pool:
            for future in [pool.submit(node.start) for node in starting]:
                future.result()
        if self.bastion is not None and self.network is not None:
            self._docker().networks.get(self.network).connect(self.bastion.get_wrapped_container())
        self._write_ssh_files()
        return self

    def _node(
        self, image: str, variant: NodeVariant, public_key: str, network: str | None = None
    ) -> NodeContainer:
        node = NodeContainer(image, session=self.session).with_variant(variant, network)
        if self.kept is not None:
            node = node.kept_as(self.kept, ssh_port=None if variant.internal else free_loopback_port())
        return node.with_authorized_key(public_key).with_startup_timeout(self._startup_timeout)

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def _create_network(self) -> str:
        name = f"nodeload-{self.session}"
        labels = {
            SANDBOX_LABEL: self.session,
            OWNER_PID_LABEL: str(os.getpid() if self.kept is None else KEPT_OWNER_PID),
            OWNER_HOST_LABEL: socket.gethostname(),
            **({KEPT_LABEL: self.kept} if self.kept is not None else {}),
        }
        self._docker().networks.create(name, driver="bridge", internal=True, labels=labels)
        return name

    def stop(self) -> None:
        """Remove every node container and volume, the network, and the temporary directory."""
        for node in [*self.nodes, *([self.bastion] if self.bastion else [])]:
            try:
                node.stop()
            except Exception as exc:  # keep cleaning up the others
                log.warning("removing node container failed: %s", exc)
        if self.network is not None:
            with contextlib.suppress(docker.errors.APIError):
                self._docker().networks.get(self.network).remove()
            self.network = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_ssh_files(self) -> None:
        """known_hosts and one ssh_config alias per node (internal nodes: through ``bastion``)."""
        hosts: list[tuple[str, NodeContainer, str, int, str]] = []
        if self.bastion is not None:
            hosts.append(("bastion", self.bastion, self.bastion.ssh_host, self.bastion.ssh_port, "root"))
        for alias, node in zip(self.aliases, self.nodes, strict=True):
            if not node.variant.sshd:
                continue
            if node.variant.internal and self.network is not None:
                hosts.append((alias, node, node.address(self.network), SSH_PORT, node.variant.login))
            else:
                hosts.append((alias, node, node.ssh_host, node.ssh_port, node.variant.login))
        known, entries = [], []
        for alias, node, host, port, user in hosts:
            known.append(f"{host if port == SSH_PORT else f'[{host}]:{port}'} {node.host_public_key()}\n")
            jump = "    ProxyJump bastion\n" if node.variant.internal else ""
            entries.append(
                f"Host {alias}\n"
                f"    HostName {host}\n"
                f"    Port {port}\n"
                f"    User {user}\n"
                f"{jump}"
                f"    IdentityFile {self.identity_path}\n"
                "    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts_path}\n"
                "    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n"
                "    LogLevel ERROR\n"
            )
        self.known_hosts_path.write_text("".join(known))
        self.ssh_config_path.write_text("\n".join(entries))


def _write_key_pair(path: Path) -> str:
    """Write an ed25519 key pair at path and path.pub; return the public key line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="nodeload-sandbox")
    # Created 0600 from the start: ssh refuses keys that others can read.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as private:
        private.write(key.export_private_key())
    public: str = key.export_public_key().decode().strip()
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return public


def sweep_leftovers(client: docker.DockerClient | None = None, *, everything: bool = False) -> int:
    """Remove sandbox containers and volumes left behind by earlier, dead test sessions.

    Containers whose owning process (label ``nodeload.sandbox.pid`` on this host) is still
    alive are kept, so parallel sessions (pytest-xdist) do not remove each other's nodes.

    Args:
        client: Docker client; a new one from the environment when omitted.
        everything: Remove every sandbox container and volume, whoever owns it.

    Returns:
        The number of containers removed.
    """
    client = client or docker_client()
    removed = 0
    for container in client.containers.list(all=True, filters={"label": SANDBOX_LABEL}):
        if not everything and (_owner_alive(container.labels) or KEPT_LABEL in container.labels):
            continue
        try:
            container.remove(force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    for volume in client.volumes.list(filters={"label": SANDBOX_LABEL}):
        labels = volume.attrs.get("Labels") or {}
        if not everything and (_owner_alive(labels) or KEPT_LABEL in labels):
            continue
        try:
            volume.remove(force=True)
        except docker.errors.APIError as exc:  # in use by a starting node, or already gone
            log.debug("keeping volume %s: %s", volume.name, exc)
    return removed


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice), to publish a node's sshd on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _owner_alive(labels: dict[str, str]) -> bool:
    # Another host's process cannot be checked: its leftovers count as dead.
    if labels.get(OWNER_HOST_LABEL) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(OWNER_PID_LABEL, ""))
        if pid <= 0:  # kill(0) would signal our own process group
            return False
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
