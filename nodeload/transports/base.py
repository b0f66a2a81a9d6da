"""The transport interface: "give me a byte stream to this node's socket"."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from nodeload.transports.execs import Executor

# struct tcp_info (Linux >= 4.2): tcpi_bytes_acked and tcpi_bytes_received, both u64.
_TCP_INFO_BYTES = struct.Struct("=QQ")
_TCP_INFO_BYTES_OFFSET = 120


@dataclass(frozen=True)
class Traffic:
    """Payload bytes a TCP connection carried each way, as the kernel counted them."""

    sent: int
    received: int


def tcp_traffic(sock: Any) -> Traffic | None:
    """The kernel's byte counters of a connected TCP socket (None where unavailable).

    These are the bytes a network counter sees, less TCP/IP headers: SSH
    framing, encryption, gRPC and protocol chatter included.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (AttributeError, OSError):
        return None
    if len(info) < _TCP_INFO_BYTES_OFFSET + _TCP_INFO_BYTES.size:
        return None
    acked, received = _TCP_INFO_BYTES.unpack_from(info, _TCP_INFO_BYTES_OFFSET)
    return Traffic(sent=max(acked - 1, 0), received=received)  # acked counts the SYN too


class Transport(Protocol):
    """A connection to one node that can reach unix sockets there.

    Used as an async context manager: entering connects (and fails with a
    :class:`~nodeload.errors.NodeError` subclass the user can act on),
    leaving tears down every tunnel it opened.
    """

    @property
    def node(self) -> str:
        """How the user named the node."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def reach(self) -> str:
        """How the last socket was reached, for reports: ``ssh-forward``, ``docker-exec:socat``..."""
        ...

    async def open_socket(self, path: str) -> str:
        """Expose the node's unix socket ``path`` locally; a gRPC target for it (``unix:...``).

        Raises:
            SocketUnavailable: with the reason; ``missing`` when the socket does not exist, and
                NoRelay when nothing on the node can carry a stream to it.
        """
        ...

    def executor(self) -> Executor | None:
        """Runs commands on the node (None where this transport cannot)."""
        ...

    def traffic(self) -> Traffic | None:
        """Bytes this connection moved so far, if it crosses a network."""
        ...
