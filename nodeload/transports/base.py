"""The transport interface: "give me a byte stream to this node's socket"."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


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

    async def can_open(self, path: str) -> bool:
        """Whether a stream to the unix socket ``path`` on the node can be opened."""
        ...

    async def forward(self, path: str) -> str:
        """Expose the node's socket ``path`` locally; return a gRPC target for it."""
        ...

    async def why_unusable(self, path: str) -> str | None:
        """Explain why ``path`` cannot be opened (missing, permission), if known."""
        ...
