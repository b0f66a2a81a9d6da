"""A socket on this machine: for running nodeload on the node itself."""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Self

from nodeload.transports.base import Traffic
from nodeload.transports.bridge import SocketUnavailable


class LocalTransport:
    """Reach a containerd socket on the local machine directly."""

    def __init__(self, node: str = "local") -> None:
        """``node`` is only a label used in reports."""
        self._node = node

    @property
    def node(self) -> str:
        """The label of this node."""
        return self._node

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def reach(self) -> str:
        """``local``."""
        return "local"

    async def open_socket(self, path: str) -> str:
        """The socket itself is the endpoint, once it is known to accept a connection.

        Raises:
            SocketUnavailable: missing, no permission, or nobody listening.
        """
        if not os.path.exists(path):
            raise SocketUnavailable(f"{path} does not exist", missing=True)
        if not os.access(path, os.R_OK | os.W_OK):
            raise SocketUnavailable(f"{path} exists but this user cannot read and write it")
        try:
            _, writer = await asyncio.open_unix_connection(path)
        except OSError as err:
            reason = err.strerror or str(err)
            raise SocketUnavailable(f"{path} cannot be opened ({reason}): is containerd running?") from err
        writer.close()
        return f"unix:{path}"

    def executor(self) -> None:
        """Commands are not run on this machine through a transport."""
        return None

    def traffic(self) -> Traffic | None:
        """Nothing crosses a network."""
        return None
