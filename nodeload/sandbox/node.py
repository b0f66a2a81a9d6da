"""``NodeContainer``: one sandbox node (sshd + containerd) as a testcontainers container."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from nodeload.sandbox.node_image import SandboxError

log = logging.getLogger(__name__)

SANDBOX_LABEL = "nodeload.sandbox"
OWNER_PID_LABEL = "nodeload.sandbox.pid"
OWNER_HOST_LABEL = "nodeload.sandbox.host"
KEPT_LABEL = "nodeload.sandbox.kept"  # the name of a sandbox that stays until `sandbox down`
KEPT_OWNER_PID = 1
AUTHORIZED_KEY_ENV = "NODELOAD_AUTHORIZED_KEY"
SSH_PORT = 22
DEFAULT_CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
K3S_CONTAINERD_SOCKET = "/run/k3s/containerd/containerd.sock"
LOOPBACK = "127.0.0.1"

# What MACHINE-NOTES prescribes where the engine refuses --privileged.
_UNPRIVILEGED_KWARGS: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined"],
}
_PRIVILEGE_KEYS = ("privileged", *_UNPRIVILEGED_KWARGS)
_CRI_OK = r"ctr plugins ls | grep -Eq '^io\.containerd\.grpc\.v1[[:space:]]+cri[[:space:]].*[[:space:]]ok\b'"


@dataclass(frozen=True)
class NodeVariant:
    """How one sandbox node differs from a plain one (sshd + containerd + socat, root login).

    Attributes:
        containerd_socket: Where containerd listens (k3s: ``K3S_CONTAINERD_SOCKET``).
        login: The SSH login of the sandbox's ssh_config (a non-root user is created).
        sudo: For a non-root login: ``nopasswd``, ``password`` (sudo asks), or ``none``.
        stream_forwarding: sshd's AllowStreamLocalForwarding.
        remove: Programs taken away at start (``socat`` and ``nc``: no relay; ``ctr``: a bare node).
        sshd: Whether sshd runs (kind/k3d-style nodes are reached with docker exec only).
        labels: Docker labels (how kind and k3d mark their node containers).
        name: The container name (kind's node names are its container names).
        internal: Only reachable through the sandbox's bastion (no published port).
        sshd_log_level: sshd's LogLevel (DEBUG1 shows every channel request).
        dockerd: Also run a Docker Engine (needs the image of ``ensure_dockerd_node_image``).
        disk: Size of containerd's disk (``/var/lib/containerd`` on a tmpfs of this size, e.g.
            ``"96m"``), for nodes whose disk fills up; None: a Docker volume, as large as the host's.
    """

    containerd_socket: str = DEFAULT_CONTAINERD_SOCKET
    login: str = "root"
    sudo: str = "none"
    stream_forwarding: bool = True
    remove: tuple[str, ...] = ()
    sshd: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    internal: bool = False
    sshd_log_level: str = "INFO"
    dockerd: bool = False
    disk: str | None = None

    @property
    def has_ctr(self) -> bool:
        """Whether ``ctr`` is left on the node."""
        return "ctr" not in self.remove

    def environment(self) -> dict[str, str]:
        """The entrypoint's NODELOAD_* settings for this variant."""
        env = {
            "CONTAINERD_ADDRESS": self.containerd_socket,
            "NODELOAD_STREAM_FORWARDING": "yes" if self.stream_forwarding else "no",
            "NODELOAD_SSHD": "yes" if self.sshd else "no",
            "NODELOAD_SSHD_LOG_LEVEL": self.sshd_log_level,
        }
        if self.login != "root":
            env.update(NODELOAD_LOGIN_USER=self.login, NODELOAD_SUDO=self.sudo)
        if self.remove:
            env["NODELOAD_REMOVE"] = " ".join(self.remove)
        if self.dockerd:
            env["NODELOAD_DOCKERD"] = "yes"
        return env


def new_session_id() -> str:
    """Return a fresh id for the ``nodeload.sandbox`` label of one test session."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


class NodeReadyWaitStrategy(WaitStrategy):
    """Wait until containerd answers, its CRI plugin is loaded and sshd sends its banner.

    The banner matters: docker-proxy accepts TCP connections on the published port before
    anything listens inside the container. Fails fast when the container exits.
    """

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        """Poll the node's readiness checks in order.

        Raises:
            TimeoutError: A check still fails after the startup timeout.
            SandboxError: The container stopped while starting.
        """
        node = cast("NodeContainer", container)
        checks: list[tuple[str, Callable[[], bool]]] = [
            # The ctr binary may be one a variant removes: ask containerd through the socket file.
            ("containerd socket", lambda: _exec_ok(node, ["sh", "-c", f"[ -S {node.containerd_socket} ]"])),
        ]
        if node.variant.has_ctr:
            checks.append(("CRI plugin", lambda: _exec_ok(node, ["sh", "-c", _CRI_OK])))
        if node.variant.dockerd:
            checks.append(("Docker Engine", lambda: _exec_ok(node, ["docker", "info"])))
        if node.variant.sshd and not node.variant.internal:
            checks.append(("SSH banner", lambda: _ssh_banner(node.ssh_host, node.ssh_port)))
        elif node.variant.sshd:
            checks.append(("sshd", lambda: _exec_ok(node, ["sh", "-c", "pgrep -x sshd >/dev/null"])))
        deadline = time.monotonic() + self._startup_timeout
        while checks:
            if checks[0][1]():
                checks.pop(0)
                continue
            node.reload()
            if node.status not in ("created", "running"):
                logs = b"".join(node.get_logs()).decode(errors="replace")[-2000:]
                raise SandboxError(f"node container {node.status} while starting:\n{logs}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node not ready after {self._startup_timeout}s: waiting for {checks[0][0]}"
                )
            time.sleep(self._poll_interval)


def _privileged_refused(exc: docker.errors.APIError) -> bool:
    # The first is this VM (CAP_SYS_RESOURCE withheld); the second, userns-remapped engines.
    text = str(exc)
    return "unable to apply caps" in text or "privileged mode is incompatible" in text


def _exec_ok(node: DockerContainer, command: list[str]) -> bool:
    try:
        return node.exec(command).exit_code == 0
    except docker.errors.APIError:  # not running yet
        return False


def _ssh_banner(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class NodeContainer(DockerContainer):
    """A sandbox node: sshd on a loopback port, containerd (CRI on) with its root on a volume.

    ``exec(command)``, inherited from testcontainers, returns ``(exit_code, output_bytes)``;
    ``check_output(command)`` raises on a non-zero exit instead.

    Example:
        >>> with NodeContainer(ensure_node_image()).with_authorized_key(pub) as node:
        ...     node.exec(["ctr", "version"])
    """

    # Whether this engine grants --privileged; the first node finds out for the others.
    _privileged_works: ClassVar[bool | None] = None

    def __init__(self, image: str, *, session: str | None = None) -> None:
        """Configure (but do not start) a node container.

        Args:
            image: The node image, normally from ``ensure_node_image()``.
            session: Value of the ``nodeload.sandbox`` label; a fresh id when omitted.
        """
        # The engine may be older than the SDK's default API version.
        super().__init__(image, docker_client_kw={"version": "auto"})
        self.session = session or new_session_id()
        # Whose end makes this container a leftover for sweep_leftovers (a cluster left running
        # by a command line names its etcd).
        self.owner_pid = os.getpid()
        self._privileged: bool | None = None
        self._volume: str | None = None
        self._port: int | None = None
        self._startup_timeout = 60.0
        self.variant = NodeVariant()
        self.containerd_socket = DEFAULT_CONTAINERD_SOCKET
        # testcontainers types ports as int-only; the SDK accepts (host_ip, port).
        cast(dict[str, Any], self.ports)[f"{SSH_PORT}/tcp"] = (LOOPBACK, None)
        # exec on the tmpfs so runc's bundles under /run/containerd behave as on a node.
        self.tmpfs["/run"] = "rw,exec,nosuid,nodev,mode=755"
        # Nested runc (ctr run) creates cgroups; the container's own /sys/fs/cgroup is read-only.
        self.with_volume_mapping("/sys/fs/cgroup", "/sys/fs/cgroup", "rw")

    def with_variant(self, variant: NodeVariant, network: str | None = None) -> Self:
        """Make this node the given variant; ``network``: a Docker network to start it on."""
        self.variant = variant
        self.containerd_socket = variant.containerd_socket
        for key, value in variant.environment().items():
            self.with_env(key, value)
        if variant.name:
            self.with_name(variant.name)
        if network:
            self._kwargs["network"] = network
        if variant.internal or not variant.sshd:
            cast(dict[str, Any], self.ports).pop(f"{SSH_PORT}/tcp", None)
        return self

    def with_authorized_key(self, public_key: str) -> Self:
        """Authorize an OpenSSH public key line for root."""
        return self.with_env(AUTHORIZED_KEY_ENV, public_key.strip())

    def kept_as(self, name: str, ssh_port: int | None) -> Self:
        """Make this node part of the kept sandbox ``name``: never swept as a leftover, started
        again with the engine, its sshd published on ``ssh_port`` (a fixed port survives a
        ``docker restart``; an ephemeral one would move)."""
        self.variant = dataclasses.replace(self.variant, labels={**self.variant.labels, KEPT_LABEL: name})
        # Owned by init, which outlives every sweep: also one by an older nodeload that does
        # not know the kept label.
        self.owner_pid = KEPT_OWNER_PID
        self._kwargs["restart_policy"] = {"Name": "unless-stopped"}
        if ssh_port is not None and f"{SSH_PORT}/tcp" in self.ports:
            cast(dict[str, Any], self.ports)[f"{SSH_PORT}/tcp"] = (LOOPBACK, ssh_port)
        return self

    def with_session(self, session: str) -> Self:
        """Set the ``nodeload.sandbox`` label value used to sweep leftovers."""
        self.session = session
        return self

    def with_privileged(self, privileged: bool | None) -> Self:
        """Force ``--privileged`` on (True) or off (False); None tries it and falls back."""
        self._privileged = privileged
        return self

    def with_startup_timeout(self, seconds: float) -> Self:
        """Set how long ``start()`` waits for sshd and containerd (default 60 s)."""
        self._startup_timeout = seconds
        return self

    def start(self) -> Self:
        """Create the volume and container, start it and wait until sshd and CRI are up.

        Raises:
            docker.errors.APIError: The engine refused the container.
            TimeoutError: sshd or containerd did not come up in time.
        """
        privileged = self._privileged
        if privileged is None:
            privileged = NodeContainer._privileged_works is not False
        try:
            self._start(privileged)
        except docker.errors.APIError as exc:
            if not (privileged and self._privileged is None and _privileged_refused(exc)):
                raise
            log.info("engine refuses --privileged; using cap-add ALL without SYS_RESOURCE")
            NodeContainer._privileged_works = False
            self._remove_container()
            self._start(False)
        else:
            if privileged and self._privileged is None:
                NodeContainer._privileged_works = True
        return self

    def _start(self, privileged: bool) -> None:
        kwargs = {k: v for k, v in self._kwargs.items() if k not in _PRIVILEGE_KEYS}
        kwargs.update({"privileged": True} if privileged else _UNPRIVILEGED_KWARGS)
        kwargs["labels"] = self._labels()
        self._kwargs = kwargs
        self.waiting_for(
            NodeReadyWaitStrategy().with_startup_timeout(int(self._startup_timeout)).with_poll_interval(0.2)
        )
        with _without_reaper():
            super().start()

    def _labels(self) -> dict[str, str]:
        return {
            **self.variant.labels,
            SANDBOX_LABEL: self.session,
            OWNER_PID_LABEL: str(self.owner_pid),
            OWNER_HOST_LABEL: socket.gethostname(),
        }

    def _configure(self) -> None:
        if self.variant.disk:  # a disk that fills up: a tmpfs of that size (overlayfs works on it)
            self.tmpfs["/var/lib/containerd"] = f"rw,exec,size={self.variant.disk}"
            return
        # A named, labelled volume (not an anonymous one) so that sweep_leftovers finds it.
        if self._volume is None:
            name = f"nodeload-{self.session}-{secrets.token_hex(3)}"
            self.get_docker_client().client.volumes.create(name, labels=self._labels())
            self._volume = name
            self.with_volume_mapping(name, "/var/lib/containerd", "rw")
            if self.variant.dockerd:  # overlay2 cannot live on the container's own overlayfs either
                self.get_docker_client().client.volumes.create(f"{name}-docker", labels=self._labels())
                self.with_volume_mapping(f"{name}-docker", "/var/lib/docker", "rw")

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Remove the container and its containerd volume (also after a failed start)."""
        client = self.get_docker_client().client
        try:
            self._remove_container()
            if self._volume is not None and delete_volume:
                for volume in (self._volume, f"{self._volume}-docker"):
                    with contextlib.suppress(docker.errors.NotFound):
                        client.volumes.get(volume).remove(force=True)
                self._volume = None
        finally:
            client.close()

    def _remove_container(self) -> None:
        if self._container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._container.remove(force=True, v=True)
            self._container = None
            self._port = None

    def get_container_host_ip(self) -> str:
        """Return 127.0.0.1: the SSH port is published on loopback only."""
        return LOOPBACK

    @property
    def ssh_host(self) -> str:
        """Host to connect to for SSH (always 127.0.0.1)."""
        return LOOPBACK

    @property
    def ssh_port(self) -> int:
        """Host port published for the node's sshd."""
        if self._port is None:
            self._port = self.get_exposed_port(SSH_PORT)
        return self._port

    def address(self, network: str) -> str:
        """The node's IP address on a Docker network (as a bastion reaches it)."""
        container = self.get_wrapped_container()
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])

    @property
    def container_id(self) -> str:
        """Docker id of the running node container."""
        return self.get_container_id()

    def check_output(self, command: str | list[str]) -> str:
        """Run a command in the node via docker exec and return its output.

        Raises:
            SandboxError: The command exited with a non-zero status.
        """
        result = self.exec(command)
        text = bytes(result.output).decode(errors="replace")
        if result.exit_code != 0:
            raise SandboxError(f"{command!r} failed in node ({result.exit_code}): {text.strip()}")
        return text

    def rx_bytes(self) -> int:
        """Bytes received on the node's eth0 so far (kernel counter, includes headers)."""
        return int(self.check_output(["cat", "/sys/class/net/eth0/statistics/rx_bytes"]))

    def tx_bytes(self) -> int:
        """Bytes sent from the node's eth0 so far (kernel counter, includes headers)."""
        return int(self.check_output(["cat", "/sys/class/net/eth0/statistics/tx_bytes"]))

    def host_public_key(self) -> str:
        """Return the node's sshd host key as ``ssh-ed25519 AAAA...`` (no comment)."""
        fields = self.check_output(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).split()
        return f"{fields[0]} {fields[1]}"

    def known_hosts_line(self) -> str:
        """Return this node's ``known_hosts`` line: ``[127.0.0.1]:PORT ssh-ed25519 AAAA...``."""
        return f"[{LOOPBACK}]:{self.ssh_port} {self.host_public_key()}"

    def veth_name(self) -> str:
        """Return the host-side veth interface of the node's eth0.

        Raises:
            SandboxError: No host interface has the index the node's eth0 links to.
        """
        iflink = self.check_output(["cat", "/sys/class/net/eth0/iflink"]).strip()
        for ifindex in Path("/sys/class/net").glob("*/ifindex"):
            if ifindex.read_text().strip() == iflink:
                return ifindex.parent.name
        raise SandboxError(f"no host interface with ifindex {iflink} (is Docker remote?)")

    def shape(self, rate_mbit: float) -> None:
        """Limit traffic towards the node to ``rate_mbit`` Mbit/s (tbf on the host's veth).

        Needs root on the Docker host (``tc``). Replaces any previous shaping.
        """
        tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "256kb", "latency", "100ms"]
        _tc("replace", "dev", self.veth_name(), "root", *tbf)

    def unshape(self) -> None:
        """Remove the shaping set by ``shape()``; a no-op when there is none."""
        veth = self.veth_name()
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", veth], capture_output=True, text=True, check=False
        )
        if " tbf " in shown.stdout:
            _tc("del", "dev", veth, "root")

    def ctr_import(self, image_ref: str, namespace: str = "k8s.io") -> None:
        """Copy an image from the local Docker engine into the node's containerd.

        Uses ``docker save | docker exec -i NODE ctr -n NS images import -``: the reference
        path that does not involve nodeload.

        Raises:
            SandboxError: docker save or ctr import failed.
        """
        ctr = ["ctr", "-n", namespace, "images", "import", "-"]
        save = subprocess.Popen(["docker", "save", image_ref], stdout=subprocess.PIPE)
        with save:
            imp = subprocess.run(
                ["docker", "exec", "-i", self.container_id, *ctr],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        if save.wait() != 0 or imp.returncode != 0:
            raise SandboxError(f"importing {image_ref} into node: {imp.stderr.strip()}")


def _tc(*args: str) -> None:
    proc = subprocess.run(["tc", "qdisc", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"tc qdisc {' '.join(args)}: {proc.stderr.strip()}")


class _Reaper:
    """Whether testcontainers starts Ryuk, its reaper, for a container. Ryuk is pulled from a
    registry (which a sandbox may not reach), and sandbox nodes are swept by label instead: it
    is off while a node starts, and back to the user's setting (``TESTCONTAINERS_RYUK_DISABLED``)
    once no node is starting, so that a user's own testcontainers keep theirs."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    starting: ClassVar[int] = 0
    users_setting: ClassVar[bool] = False


@contextlib.contextmanager
def _without_reaper() -> Iterator[None]:
    settings = testcontainers_config
    with _Reaper.lock:
        if _Reaper.starting == 0:
            _Reaper.users_setting = settings.ryuk_disabled
        _Reaper.starting += 1
        settings.ryuk_disabled = True
    try:
        yield
    finally:
        with _Reaper.lock:
            _Reaper.starting -= 1
            if _Reaper.starting == 0:
                settings.ryuk_disabled = _Reaper.users_setting
