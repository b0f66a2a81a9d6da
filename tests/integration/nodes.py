"""A real containerd and a real OpenSSH sshd, started as plain processes on 127.0.0.1.

No Docker needed: each fixture owns a temp directory with all state, and
tears the process down at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{root}/ttrpc.sock"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
"""

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_ed25519
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding {forwarding}
LogLevel {log_level}
{extra}"""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def path_without(directory: Path, programs: set[str]) -> str:
    """A PATH (one directory of links) to every program on this machine's PATH but ``programs``:
    for an sshd whose sessions must not find them, whatever this machine has installed."""
    directory.mkdir()
    for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            program, link = Path(entry, name), directory / name
            if name in programs or link.exists() or not os.access(program, os.X_OK):
                continue
            link.symlink_to(program)
    return str(directory)


def _wait_for(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout}s")


@dataclass
class Containerd:
    """A containerd process with private state."""

    root: Path
    socket: Path
    process: subprocess.Popen[bytes]

    def ctr(self, *args: str, namespace: str = "k8s.io") -> str:
        """Run ``ctr`` against this containerd and return its output."""
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", namespace, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return out.stdout

    def collect_garbage(self, namespace: str = "k8s.io") -> None:
        """A synchronous garbage collection (deleting a lease with --sync runs one)."""
        lease = self.ctr("leases", "create", namespace=namespace).split()[0]
        self.ctr("leases", "delete", "--sync", lease, namespace=namespace)

    def stop(self) -> None:
        """Stop containerd and unmount whatever its snapshotter left mounted."""
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        subprocess.run(
            f"grep ' {self.root}' /proc/mounts | cut -d' ' -f2 | xargs -r umount -l", shell=True, check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_containerd(root: Path) -> Containerd:
    """Start containerd with state under ``root``; wait until it answers."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "containerd.sock"
    config = root / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(root=root, socket=sock))
    log = open(root / "containerd.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    node = Containerd(root, sock, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited: {(root / 'containerd.log').read_text()[-2000:]}")
        return subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True).returncode == 0

    _wait_for(ready, "containerd")
    return node


@dataclass
class Sshd:
    """An sshd process on 127.0.0.1 that trusts one client key."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    client_key: Path
    known_hosts: Path
    host_key_line: str

    @property
    def node(self) -> str:
        """The node as given to ``--node``."""
        return f"root@127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop sshd."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(
    root: Path, log_level: str = "ERROR", *, forwarding: bool = True, path: str | None = None
) -> Sshd:
    """Start sshd with a fresh host key and client key; wait until it accepts.

    Its log (``root/sshd.log``) is at ``log_level`` (DEBUG1 shows every channel request).
    ``path``: the PATH its sessions get (sshd's ``SetEnv``), to give the "node" fewer programs
    than this machine has; their HOME is then an empty directory, so that no shell start-up
    file of this machine's (root's ~/.bashrc adding pyenv's shims) puts programs back.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    _keygen(root / "host_ed25519")
    _keygen(root / "client_ed25519")
    (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            port=port,
            root=root,
            log_level=log_level,
            forwarding="yes" if forwarding else "no",
            extra=f"SetEnv PATH={path} HOME={root / 'home'}\n" if path else "",
        )
    )
    host_pub = (root / "host_ed25519.pub").read_text().split()
    line = f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}"
    (root / "known_hosts").write_text(line + "\n")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "sshd.log", "wb"),  # noqa: SIM115 - lives as long as the process
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_for(ready, "sshd")
    return Sshd(root, port, proc, root / "client_ed25519", root / "known_hosts", line)
