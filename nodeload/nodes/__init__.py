"""Where target nodes come from: ``--node``, kubeconfig, Ansible inventories, kind/k3d."""

from nodeload.nodes.spec import NodeSpec, Reach

__all__ = ["NodeSpec", "Reach"]
