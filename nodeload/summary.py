"""What a person reads at the end of a push: a table of (node, image) results, then the failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from nodeload.report import NodeResult, human_bytes
from nodeload.text import printable

if TYPE_CHECKING:
    from nodeload.registry.server import ServeOutcome


def print_summary(console: Console, results: Sequence[NodeResult]) -> None:
    """The result table, one row per (node, image), and each failure's cause below it.

    An image that failed on every node for the same reason (an unreadable source) is
    explained once, not once per node.
    """
    several_images = len({r.image for r in results}) > 1
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("node", *(("image",) if several_images else ()), "status", "sent", "skipped", "time"):
        table.add_column(column, justify="right" if column in ("sent", "skipped", "time") else "left")
    for result in results:
        status = _status(result) + (" (from peers)" if result.delivered_by == "peer-pull" else "")
        row = [printable(result.node), *((printable(result.image),) if several_images else ()), status]
        row += [human_bytes(result.bytes_sent), human_bytes(result.bytes_skipped), f"{result.seconds:.1f}s"]
        table.add_row(*row)
    console.print(table)
    for line in _failure_lines(results):
        console.print(printable(line), markup=False)
    for result in results:
        for warning in result.warnings:
            console.print(printable(f"{result.node}: warning: {warning}"), markup=False)
    uplink = uplink_line(results)
    if uplink:
        console.print(uplink, markup=False)


def uplink_line(results: Sequence[NodeResult]) -> str | None:
    """With seed nodes: what left this machine, and what pushing every node would have sent."""
    pulled = [r for r in results if r.delivered_by == "peer-pull"]
    if not pulled:
        return None
    sent = sum(r.wire_bytes_sent or 0 for r in results)
    # A peer would have needed up to what a seed holds of the image (sent or already there).
    whole = {r.image: r.bytes_sent + r.bytes_skipped for r in results if r.delivered_by == "push" and r.ok}
    direct = sum(r.wire_bytes_sent or 0 for r in results if r.delivered_by == "push") + sum(
        whole.get(r.image, 0) for r in pulled
    )
    return (
        f"uplink: {human_bytes(sent)} left this machine; {len(pulled)} node(s) pulled from their peers "
        f"(pushing each directly: up to {human_bytes(direct)})"
    )


def print_failures(console: Console, results: Sequence[NodeResult]) -> None:
    """Only the failures and warnings (with ``--json``, where the table would be noise)."""
    for line in _failure_lines(results):
        console.print(printable(line), markup=False)


def _status(result: NodeResult) -> str:
    if not result.ok:
        return "[red]FAILED[/]"
    cri = {True: " (CRI)", False: " [yellow](not seen by CRI)[/]", None: ""}[result.cri_indexed]
    return f"[green]ok[/]{cri}"


def _failure_lines(results: Sequence[NodeResult]) -> list[str]:
    lines: list[str] = []
    explained: set[str] = set()
    for image in dict.fromkeys(r.image for r in results):
        failed = [r for r in results if r.image == image and not r.ok]
        mine = [r for r in results if r.image == image]
        if len(mine) > 1 and len(failed) == len(mine) and len({r.error for r in failed}) == 1:
            lines.append(f"{image}: FAILED on every node: {failed[0].error}")
            explained.add(image)
    for result in results:
        if not result.ok and result.image not in explained:
            lines.append(f"{result.node}: FAILED: {result.error}")
    return lines


def print_serve_summary(console: Console, outcome: ServeOutcome) -> None:
    """What ``nodeload serve`` left on each node: images, bytes received, failures."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("node", "status", "received", "images"):
        table.add_column(column, justify="right" if column == "received" else "left")
    for session in outcome.sessions:
        status = "[red]FAILED[/]" if session.errors else "[green]ok[/]"
        names = [printable(r.name) for r in session.results if r.ok]
        names += [f"{printable(m.name or m.digest)} (stored, not an image)" for m in session.stored]
        table.add_row(
            printable(session.name), status, human_bytes(session.bytes_received), ", ".join(names) or "-"
        )
    for name in outcome.unreachable:
        table.add_row(printable(name), "[red]FAILED[/]", human_bytes(0), "-")
    console.print(table)
    for session in outcome.sessions:
        for error in session.errors:
            console.print(printable(f"{session.name}: FAILED: {error}"), markup=False)
    for name, why in outcome.unreachable.items():
        console.print(printable(f"{name}: FAILED: {why}"), markup=False)
