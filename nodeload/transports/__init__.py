"""Transports give a local gRPC endpoint that reaches a socket on a node.

A transport knows how to get bytes to a unix socket on the node (SSH forwarding today;
an exec bridge, ``docker exec`` and the agent slot in the same way) and nothing about
containerd or images. It turns its own library's errors into NodeErrors.
"""

from nodeload.transports.base import Traffic, Transport

__all__ = ["Traffic", "Transport"]
