"""Progress on a terminal: one rich line per node (rich is imported only when bars are shown)."""

from __future__ import annotations

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


def _shown(text: str) -> str:
    """Text from nodes or sources, safe for the terminal and for rich's markup."""
    return escape(printable(text))


class RichProgress:
    """One line per node: its state, bytes sent of bytes to send, rate and time left.

    Readable with twenty nodes: blobs only feed their node's line.
    """

    def __init__(self, console: Console) -> None:
        """Lines go to ``console`` (stderr, so stdout stays clean)."""
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
        """Grow the node's line by the blob (what an earlier run delivered counts as done)."""
        task = self._node_task(node)
        node_total = self._progress.tasks[task].total or 0
        self._progress.update(task, total=node_total + total, advance=already)
        return task

    def advance(self, handle: object, n: int) -> None:
        """Move the node's line."""
        assert isinstance(handle, int)
        self._progress.advance(TaskID(handle), n)

    def blob_done(self, handle: object) -> None:
        """Nothing to remove: blobs have no line of their own."""

    def message(self, node: str, text: str) -> None:
        """Show the node's current state on its line."""
        self._progress.update(self._node_task(node), description=f"[bold]{_shown(node)}[/] {_shown(text)}")
