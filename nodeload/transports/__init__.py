"""Transports give a local gRPC endpoint that reaches a node's containerd socket.

A transport knows how to get bytes to a unix socket on the node (SSH today;
``docker exec`` and a sudo bridge slot in the same way) and nothing about
containerd or images.
"""

from nodeload.transports.base import Transport
from nodeload.transports.local import LocalTransport
from nodeload.transports.ssh import SSHOptions, SSHTransport, parse_node

__all__ = ["LocalTransport", "SSHOptions", "SSHTransport", "Transport", "parse_node"]
