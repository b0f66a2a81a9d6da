"""A throwaway sandbox of pretend Kubernetes nodes (sshd + containerd in Docker containers).

Used by ``make demo``, the e2e tests and the benchmark; not needed to use nodeload itself.
Needs a local Docker engine and the ``sandbox`` extra (testcontainers).
"""

from nodeload.sandbox.node import (
    K3S_CONTAINERD_SOCKET,
    SANDBOX_LABEL,
    NodeContainer,
    NodeReadyWaitStrategy,
    NodeVariant,
    new_session_id,
)
from nodeload.sandbox.node_image import (
    SandboxError,
    cache_dir,
    docker_client,
    ensure_dockerd_node_image,
    ensure_node_image,
    node_image_tag,
)
from nodeload.sandbox.sandbox import Sandbox, sweep_leftovers
from nodeload.sandbox.test_images import (
    LayerSpec,
    build_image,
    layer_diff_ids,
    static_busybox,
)

__all__ = [
    "K3S_CONTAINERD_SOCKET",
    "SANDBOX_LABEL",
    "LayerSpec",
    "NodeContainer",
    "NodeReadyWaitStrategy",
    "NodeVariant",
    "Sandbox",
    "SandboxError",
    "build_image",
    "cache_dir",
    "docker_client",
    "ensure_dockerd_node_image",
    "ensure_node_image",
    "layer_diff_ids",
    "new_session_id",
    "node_image_tag",
    "static_busybox",
    "sweep_leftovers",
]
