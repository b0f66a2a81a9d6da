"""A stand-in for a cluster's peer-to-peer registry mirror (Spegel) in a sandbox.

A real registry server (Debian's ``docker-registry``, distribution 2.8, copied from this
machine) runs in one sandbox node container, on the nodes' network; the other nodes' containerd
is configured to pull a registry host through it with ``/etc/containerd/certs.d/HOST/hosts.toml``,
exactly the configuration Spegel writes. :meth:`RegistryMirror.fill` copies an image into it (as
Spegel would serve it from a seed's content store). Its access log says who pulled what.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence

import requests

from nodeload.sandbox.node_image import SandboxError
from nodeload.sandbox.sandbox import Sandbox

PORT = 5000
LOG = "/var/log/registry.log"
_CONFIG = (
    "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n"
)


class RegistryMirror:
    """The registry on sandbox node ``alias``, and the nodes that pull through it."""

    def __init__(self, sandbox: Sandbox, alias: str) -> None:
        """Use ``sandbox``'s node ``alias`` as the mirror host (call :meth:`start`)."""
        self.sandbox, self.alias = sandbox, alias
        self.node = sandbox.node(alias)
        self.ip = self.node.address("bridge")
        self.url = f"http://{self.ip}:{PORT}"

    def start(self) -> RegistryMirror:
        """Copy this machine's docker-registry into the node and run it.

        Raises:
            SandboxError: docker-registry is not installed here.
        """
        binary = shutil.which("docker-registry")
        if binary is None:
            raise SandboxError(
                "the mirror stand-in needs Debian's docker-registry (apt-get install docker-registry)"
            )
        target = f"{self.node.container_id}:/usr/local/bin/docker-registry"
        subprocess.run(["docker", "cp", binary, target], check=True, capture_output=True)
        self.node.check_output(
            ["sh", "-c", f"mkdir -p /etc/registry && printf '%s' '{_CONFIG}' >/etc/registry/config.yml"]
        )
        serve = f"exec docker-registry serve /etc/registry/config.yml >{LOG} 2>&1"
        self.node.get_wrapped_container().exec_run(["sh", "-c", serve], detach=True)
        return self

    def configure(self, aliases: Sequence[str], host: str = "docker.io") -> None:
        """Have the nodes ``aliases`` pull ``host`` through this mirror (containerd's hosts.toml)."""
        hosts = f'server = "{self.url}"\n\n[host."{self.url}"]\n  capabilities = ["pull", "resolve"]\n'
        directory = f"/etc/containerd/certs.d/{host}"
        write = f"mkdir -p {directory} && printf '%s' '{hosts}' >{directory}/hosts.toml"
        for alias in aliases:
            self.sandbox.node(alias).check_output(["sh", "-c", write])

    def fill(self, source: str, repository: str) -> None:
        """Copy ``source`` (a skopeo source, e.g. ``oci:DIR:v1``) into the mirror as ``repository``
        (``nodeload-e2e/app:v1``), through an SSH tunnel (the registry port is not published)."""
        with self._tunnel() as port:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).ok:
                        break
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"the mirror registry on {self.alias} did not come up: {self.log()[-500:]}"
                    )
                time.sleep(0.2)
            destination = f"docker://127.0.0.1:{port}/{repository}"
            copy = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", source, destination]
            subprocess.run(copy, check=True, timeout=300)

    def log(self) -> str:
        """The registry's log: one line per request, with the client's address."""
        return self.node.check_output(["cat", LOG])

    def stop(self) -> None:
        """Kill the registry (the mirror goes down)."""
        self.node.check_output(["sh", "-c", "pkill -KILL -x docker-registry || true"])

    @contextlib.contextmanager
    def _tunnel(self) -> Iterator[int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        forward = [
            "ssh",
            "-F",
            str(self.sandbox.ssh_config_path),
            "-N",
            "-L",
            f"127.0.0.1:{port}:127.0.0.1:{PORT}",
        ]
        process = subprocess.Popen([*forward, self.alias])
        try:
            time.sleep(0.3)
            yield port
        finally:
            process.terminate()
            process.wait()
