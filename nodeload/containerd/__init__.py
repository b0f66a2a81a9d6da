"""containerd's gRPC API, as nodeload speaks it (own .proto subset under api/)."""

from nodeload.containerd.client import ContainerdClient, NodeInfo

__all__ = ["ContainerdClient", "NodeInfo"]
