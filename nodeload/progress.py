"""Progress reporting: rich bars on a terminal, silence otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nodeload.text import printable


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


def _shown(text: str) -> str:
    """Text from nodes or sources, safe for the terminal and for rich's markup."""
    return escape(printable(text))


@dataclass(frozen=True)
class _BlobBar:
    node_task: TaskID
    task: TaskID


class RichProgress:
    """A bar per node and per blob while it is being sent."""

    def __init__(self, console: Console) -> None:
        """Bars go to ``console`` (stderr, so stdout stays clean)."""
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._nodes: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _node_task(self, node: str) -> TaskID:
        if node not in self._nodes:
            self._nodes[node] = self._progress.add_task(f"[bold]{_shown(node)}", total=0)
        return self._nodes[node]

    def blob_started(self, node: str, digest: str, total: int, already: int) -> object:
        """Add a bar for the blob and grow the node's bar."""
        node_task = self._node_task(node)
        node_total = self._progress.tasks[node_task].total or 0
        self._progress.update(node_task, total=node_total + total, advance=already)
        task = self._progress.add_task(f"  {digest[7:19]}", total=total, completed=already)
        return _BlobBar(node_task, task)

    def advance(self, handle: object, n: int) -> None:
        """Move both the blob's and the node's bar."""
        assert isinstance(handle, _BlobBar)
        self._progress.advance(handle.task, n)
        self._progress.advance(handle.node_task, n)

    def blob_done(self, handle: object) -> None:
        """Remove the finished blob's bar."""
        assert isinstance(handle, _BlobBar)
        self._progress.remove_task(handle.task)

    def message(self, node: str, text: str) -> None:
        """Show the node's current phase in its bar."""
        self._progress.update(self._node_task(node), description=f"[bold]{_shown(node)}[/] {_shown(text)}")
