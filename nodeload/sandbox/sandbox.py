"""``Sandbox``: a few node containers plus the SSH files a user of real nodes would have."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh
import docker
import docker.errors

from nodeload.sandbox.node import (
    DEFAULT_CONTAINERD_SOCKET,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    SANDBOX_LABEL,
    NodeContainer,
    new_session_id,
)
from nodeload.sandbox.node_image import BaseSource, docker_client, ensure_node_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeVariant:
    """How one sandbox node differs from a plain one (sshd + containerd, root login).

    Attributes:
        containerd_socket: Where containerd listens (k3s: ``K3S_CONTAINERD_SOCKET``).
    """

    containerd_socket: str = DEFAULT_CONTAINERD_SOCKET

    def configure(self, node: NodeContainer) -> NodeContainer:
        """Apply this variant to a node that is not started yet."""
        if self.containerd_socket != DEFAULT_CONTAINERD_SOCKET:
            node.with_containerd_socket(self.containerd_socket)
        return node


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
    ) -> None:
        """Configure (but do not start) a sandbox.

        Args:
            nodes: Number of node containers, or one variant per node (the ``nodes`` attribute
                then lists them, reachable as ``node-1``, ``node-2``...).
            image: Node image; built (or reused) with ``ensure_node_image`` when omitted.
            client: Docker client; a new one from the environment when omitted.
            base: Base of the node image when it has to be built (see ``ensure_node_image``).
            startup_timeout: Seconds each node may take to get sshd and containerd up.
        """
        self.variants = [NodeVariant()] * nodes if isinstance(nodes, int) else list(nodes)
        if not self.variants:
            raise ValueError(f"a sandbox needs at least one node, not {nodes}")
        self.session = new_session_id()
        self.nodes: list[NodeContainer] = []
        self.aliases = [f"node-{i}" for i in range(1, len(self.variants) + 1)]
        self._image = image
        self._client = client
        self._base: BaseSource = base
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None

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
        self._dir = Path(tempfile.mkdtemp(prefix="nodeload-sandbox-"))
        public_key = _write_key_pair(self.identity_path)
        self.nodes = [
            variant.configure(NodeContainer(image, session=self.session)) for variant in self.variants
        ]
        for node in self.nodes:
            node.with_authorized_key(public_key).with_startup_timeout(self._startup_timeout)
        # Threads only wait on Docker and sockets; 2 cores are plenty.
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            for future in [pool.submit(node.start) for node in self.nodes]:
                future.result()
        self._write_ssh_files()
        return self

    def stop(self) -> None:
        """Remove every node container and volume, and the temporary directory."""
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep cleaning up the others
                log.warning("removing node container failed: %s", exc)
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
        lines = [node.known_hosts_line() + "\n" for node in self.nodes]
        self.known_hosts_path.write_text("".join(lines))
        entries = []
        for alias, node in zip(self.aliases, self.nodes, strict=True):
            entries.append(
                f"Host {alias}\n"
                f"    HostName {node.ssh_host}\n"
                f"    Port {node.ssh_port}\n"
                "    User root\n"
                f"    IdentityFile {self.identity_path}\n"
                "    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts_path}\n"
                "    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n"
                "    LogLevel ERROR\n"
            )
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
        if not everything and _owner_alive(container.labels):
            continue
        try:
            container.remove(force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    for volume in client.volumes.list(filters={"label": SANDBOX_LABEL}):
        if not everything and _owner_alive(volume.attrs.get("Labels") or {}):
            continue
        try:
            volume.remove(force=True)
        except docker.errors.APIError as exc:  # in use by a starting node, or already gone
            log.debug("keeping volume %s: %s", volume.name, exc)
    return removed


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
