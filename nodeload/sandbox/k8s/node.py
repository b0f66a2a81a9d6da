"""A Kubernetes node: the sandbox node image plus kubelet, CNI plugins, iptables and a pause image.

The container is a sandbox node (sshd + containerd with CRI), started on the cluster's
``--internal`` network only, with tini as PID 1 (kubelet's pods are reaped), ``/dev/kmsg``
(kubelet's OOM watcher) and the host's cgroup hierarchy (nested runc). kubelet starts once the
cluster has written the node's certificates and configuration into it.

kubelet exits unless six kernel settings hold its values, and ``/proc/sys`` is the host's: small
files with those values are bind-mounted over them inside the node container only, so nothing
ever reads or writes the host's settings (also where ``--privileged`` makes ``/proc/sys``
writable).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from nodeload.sandbox.k8s.build import Binaries
from nodeload.sandbox.node import NodeContainer, NodeVariant
from nodeload.sandbox.node_image import SandboxError, _cache_lock, _image_exists, ensure_node_image

log = logging.getLogger(__name__)

KUBE_NODE_IMAGE_REPO = "nodeload-kube-node"
# No registry serves this name (.invalid never resolves): the image is imported on every node
# and CRI never tries to pull it.
PAUSE_IMAGE = "nodeload.invalid/pause:3.4"
CONFIG_DIR = "/etc/nodeload-k8s"
KUBELET_LOG = "/var/log/kubelet.log"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
# What kubelet insists on (its setupKernelTunables); the node sees these, the host keeps its own.
KUBELET_SYSCTLS = {
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.keys.root_maxbytes": "25000000",
}

_DOCKERFILE = """ARG BASE
FROM ${BASE}
# iptables for kubelet's own chains, CNI's bridge plugin for pods (Debian's packages).
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
       iptables containernetworking-plugins \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /etc/cni/net.d /var/lib/kubelet /etc/nodeload-k8s /usr/local/share/nodeload
COPY kubelet nodeload-kubelet-setup nodeload-kubelet /usr/local/bin/
COPY pause.tar /usr/local/share/nodeload/pause.tar
COPY containerd-config.toml /etc/containerd/config.toml
"""

# The sandbox node's containerd configuration, with what kubelet's pods need: the pause image
# imported at start, CNI, and no attempt to lower oom_score_adj (CAP_SYS_RESOURCE is withheld).
_CONTAINERD_CONFIG = f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"""

_SETUP = f"""#!/bin/sh
# Before kubelet starts: no route out of the cluster network (Docker gives internal networks a
# default route through the host, which then drops what it would forward), the kernel settings
# kubelet insists on (files over /proc/sys, in this container only), the cgroup its pods go
# under, and the pause image.
set -eu
cgroup_root=$1
ip route del default 2>/dev/null || true
for file in {CONFIG_DIR}/sysctl/*; do
    target=/proc/sys/$(basename "$file" | tr . /)
    grep -q " $target " /proc/self/mountinfo || mount --bind "$file" "$target"
done
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p "/sys/fs/cgroup/$cgroup_root"
else
    for hierarchy in /sys/fs/cgroup/*/; do
        [ -e "${{hierarchy}}cgroup.procs" ] && mkdir -p "$hierarchy$cgroup_root"
    done
    cpuset=/sys/fs/cgroup/cpuset
    if [ -e "$cpuset/cpuset.cpus" ]; then
        cat "$cpuset/cpuset.cpus" >"$cpuset/$cgroup_root/cpuset.cpus"
        cat "$cpuset/cpuset.mems" >"$cpuset/$cgroup_root/cpuset.mems"
    fi
fi
ctr -n k8s.io images import /usr/local/share/nodeload/pause.tar >/dev/null
"""

_RUN = f"""#!/bin/sh
# kubelet's cloud credential provider probes the EC2 metadata address at start: nothing may leave
# the machine.
export AWS_EC2_METADATA_DISABLED=true
exec /usr/local/bin/kubelet "$@" >>{KUBELET_LOG} 2>&1
"""


def ensure_kube_node_image(binaries: Binaries, client: docker.DockerClient) -> str:
    """The node image with kubelet, built unless one of the same content exists.

    Raises:
        SandboxError: The image could not be built (its apt-get needs Debian's archive).
    """
    base = ensure_node_image(client)
    files = _context_files(binaries)
    digest = hashlib.sha256(base.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    digest.update(binaries.digests["kubelet"].encode())
    tag = f"{KUBE_NODE_IMAGE_REPO}:{digest.hexdigest()[:12]}"
    if not _image_exists(client, tag):
        with _cache_lock():  # parallel sessions build it once
            if not _image_exists(client, tag):
                _build(client, tag, base, files, binaries)
    return tag


def _build(
    client: docker.DockerClient, tag: str, base: str, files: Mapping[str, bytes], binaries: Binaries
) -> None:
    log.info("building %s on %s", tag, base)
    with tempfile.TemporaryDirectory(prefix="nodeload-kube-node-") as ctx:
        for name, data in files.items():
            (Path(ctx) / name).write_bytes(data)
            (Path(ctx) / name).chmod(0o755 if name.startswith("nodeload-") else 0o644)
        kubelet = Path(ctx) / "kubelet"
        kubelet.write_bytes(binaries.path("kubelet").read_bytes())
        kubelet.chmod(0o755)
        try:
            client.images.build(path=ctx, tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)[-2000:]
            raise SandboxError(f"building {tag}: {exc.msg}\n{tail}") from exc


def _context_files(binaries: Binaries) -> dict[str, bytes]:
    return {
        "Dockerfile": _DOCKERFILE.encode(),
        "containerd-config.toml": _CONTAINERD_CONFIG.encode(),
        "nodeload-kubelet-setup": _SETUP.encode(),
        "nodeload-kubelet": _RUN.encode(),
        "pause.tar": pause_archive(binaries.path("pause").read_bytes()),
    }


def pause_archive(pause: bytes) -> bytes:
    """A ``docker save`` archive of the pause image: one layer holding ``/pause``, its entrypoint."""
    layer = _tar({"pause": (pause, 0o755)})
    diff_id = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    config = json.dumps(
        {
            "architecture": _goarch(),
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    layer_name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": [layer_name]}]
    ).encode()
    return _tar(
        {"manifest.json": (manifest, 0o644), config_name: (config, 0o644), layer_name: (layer, 0o644)}
    )


def _tar(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 946684800
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


class KubeNode(NodeContainer):
    """One cluster node: a sandbox node container on the cluster's network, running kubelet."""

    def __init__(self, image: str, *, name: str, container_name: str, network: str, session: str) -> None:
        """Configure (not start) node ``name`` (its hostname and Kubernetes node name)."""
        super().__init__(image, session=session)
        self.node_name = name
        self.network = network
        self.with_variant(NodeVariant(internal=True, name=container_name), network)
        self._kwargs.update(hostname=name, init=True, devices=["/dev/kmsg:/dev/kmsg:rwm"])
        self.with_startup_timeout(120)

    @property
    def volume(self) -> str | None:
        """The Docker volume holding the node's containerd root."""
        return self._volume

    @property
    def ip(self) -> str:
        """The node's address on the cluster network (its InternalIP)."""
        return self.address(self.network)

    def put_files(self, files: Mapping[str, tuple[bytes, int]]) -> None:
        """Write files (absolute path -> (content, mode)) into the node.

        Raises:
            SandboxError: The engine refused the archive.
        """
        archive = _tar({path.lstrip("/"): content for path, content in files.items()})
        if not self.get_wrapped_container().put_archive("/", archive):
            raise SandboxError(f"writing {', '.join(files)} into {self.node_name} failed")

    def start_kubelet(self, cgroup_root: str, args: list[str]) -> None:
        """Prepare the node (kernel settings, cgroup, pause image), then start kubelet in it.

        Raises:
            SandboxError: The preparation failed.
        """
        self.check_output(["/usr/local/bin/nodeload-kubelet-setup", cgroup_root])
        self.get_wrapped_container().exec_run(["/usr/local/bin/nodeload-kubelet", *args], detach=True)

    def kubelet_log(self, chars: int = 3000) -> str:
        """The end of kubelet's log in the node."""
        result = self.exec(["tail", "-c", str(chars), KUBELET_LOG])
        return bytes(result.output).decode(errors="replace")
