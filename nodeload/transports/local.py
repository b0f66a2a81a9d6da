"""A socket on this machine: for running nodeload on the node itself."""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Self

from nodeload.transports.base import Traffic


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

    async def can_open(self, path: str) -> bool:
        """Try to connect to the socket."""
        try:
            _, writer = await asyncio.open_unix_connection(path)
        except OSError:
            return False
        writer.close()
        return True

    async def forward(self, path: str) -> str:
        """The socket itself is the endpoint."""
        return f"unix:{path}"

    def traffic(self) -> Traffic | None:
        """Nothing crosses a network."""
        return None

    async def why_unusable(self, path: str) -> str | None:
        """Missing socket or missing permission."""
        if not os.path.exists(path):
            return f"{path} does not exist"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} exists but this user cannot read and write it"
        return None
