"""Progress reporting: the sink every push writes to, and the silent one (rich bars: ``progress_bars``)."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives transfer events; implementations must be cheap."""

    def blob_started(self, node: str, digest: str, total: int, already: int) -> object:
        """A blob of ``total`` bytes starts (``already`` bytes resumed); returns a handle."""
        ...

    def advance(self, handle: object, n: int) -> None:
        """``n`` more bytes of the blob went out."""
        ...

    def blob_done(self, handle: object) -> None:
        """The blob is committed."""
        ...

    def message(self, node: str, text: str) -> None:
        """A status line for one node (e.g. "unpacking")."""
        ...


class NullProgress:
    """Progress that shows nothing (``--json``, pipes, CI logs)."""

    def blob_started(self, node: str, digest: str, total: int, already: int) -> object:
        """Nothing to show."""
        return None

    def advance(self, handle: object, n: int) -> None:
        """Nothing to show."""

    def blob_done(self, handle: object) -> None:
        """Nothing to show."""

    def message(self, node: str, text: str) -> None:
        """Nothing to show."""
