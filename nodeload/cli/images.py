"""``nodeload images`` and ``nodeload rm``: what the nodes hold, and removing it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from rich.text import Text

from nodeload.cli.common import selected_nodes, ssh_options

if TYPE_CHECKING:
    from rich.console import Console

    from nodeload.image_removal import RemoveResult
    from nodeload.node_images import ImagesReport
    from nodeload.nodes.spec import NodeSpec
    from nodeload.session import Session


def run_images(args: argparse.Namespace, err: Console, session: Session | None = None) -> int:
    """Show what the selected nodes hold of each IMAGE; 1 when a node could not be read."""
    from nodeload.api import list_images
    from nodeload.node_images import ImagesOptions

    nodes = _nodes(args, err)
    options = ImagesOptions(
        namespace=args.namespace,
        socket=args.containerd_socket,
        timeout=args.timeout,
        parallel=args.parallel,
        ssh=ssh_options(args, err),
    )
    report = list_images(args.images, nodes, options, session=session)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_images(report)
    _node_errors(err, [(n.node, n.error) for n in report.nodes])
    return 0 if report.ok else 1


def run_rm(args: argparse.Namespace, err: Console, session: Session | None = None) -> int:
    """Remove each IMAGE from the selected nodes; 1 when a node failed or an image was refused."""
    from nodeload.api import remove_images
    from nodeload.image_removal import RemoveOptions

    nodes = _nodes(args, err)
    options = RemoveOptions(
        namespace=args.namespace,
        socket=args.containerd_socket,
        timeout=args.timeout,
        parallel=args.parallel,
        ssh=ssh_options(args, err),
        force=args.force,
        dry_run=args.dry_run,
    )
    results = remove_images(args.images, nodes, options, session=session)
    if args.json:
        document = {
            "dry_run": args.dry_run,
            "namespace": args.namespace,
            "error": None,
            "nodes": [r.to_json() for r in results],
        }
        print(json.dumps(document, indent=2))
    else:
        _print_removals(results, args.dry_run)
    _node_errors(err, [(r.node, r.error) for r in results])
    if any(i.status == "refused" for r in results for i in r.images):
        err.print("nodeload: images in use were left in place (--force removes them anyway)", markup=False)
    return 0 if all(r.ok for r in results) else 1


def _nodes(args: argparse.Namespace, err: Console) -> list[NodeSpec]:
    from nodeload.errors import UsageError

    nodes = selected_nodes(args, err)
    if not nodes:
        raise UsageError("no node selected: --node NODE, --all-nodes...")
    return nodes


def _node_errors(err: Console, errors: list[tuple[str, str | None]]) -> None:
    from nodeload.text import printable

    for node, error in errors:
        if error:
            err.print(f"nodeload: {printable(node)}: {printable(error)}", markup=False)


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "-"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _row(*cells: str) -> list[Text]:
    """Table cells as plain text: names come from the nodes, never markup or control characters."""
    from nodeload.text import printable

    return [Text(printable(cell)) for cell in cells]


def _print_images(report: ImagesReport) -> None:
    """A table per image (its name as the title: names are long), a row per reached node."""
    from rich.console import Console
    from rich.table import Table

    from nodeload.report import human_bytes
    from nodeload.text import printable

    console = Console(soft_wrap=True, highlight=False)
    for view in report.images:
        table = Table(title=Text(printable(view.name)), title_justify="left")
        for header in ("node", "image id", "manifest", "size", "unpacked", "cri", "version"):
            table.add_column(header, no_wrap=header != "node")
        for holder in view.holders:
            copy = holder.copy
            if copy is None:
                table.add_row(*_row(holder.node, "-", "-", "-", "-", "-", "absent"))
                continue
            version = "OTHER" if holder.differs else "newest" if copy.image_id else "unreadable"
            size = human_bytes(copy.size) + ("" if copy.complete else " (incomplete)")
            unpacked, cri = _yes_no(copy.unpacked), _yes_no(copy.cri)
            table.add_row(
                *_row(holder.node, _short(copy.image_id), _short(copy.manifest), size, unpacked, cri, version)
            )
        console.print(table)
        if view.differing:
            held = f"hold{'s' if len(view.differing) == 1 else ''} another ID than"
            print(printable(f"{view.name}: {', '.join(view.differing)} {held} {_short(view.image_id)}"))
    if not report.images:
        print(f"no image found in {report.namespace}" if any(n.ok for n in report.nodes) else "no node read")


def _print_removals(results: list[RemoveResult], dry_run: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from nodeload.report import human_bytes
    from nodeload.text import printable

    table = Table(title="nodeload rm" + (" (dry run)" if dry_run else ""))
    for header in ("node", "image", "image id", "result", "records", "used by"):
        table.add_column(header, overflow="fold")  # a name cut short names another image
    for result in results:
        for removal in result.images:
            used = ", ".join(f"{u.pod or u.kind}: {u.name} ({u.state})" for u in removal.used_by)
            table.add_row(
                *_row(
                    result.node,
                    removal.name,
                    _short(removal.image_id),
                    removal.status,
                    str(len(removal.records)),
                    used or "-",
                )
            )
    if table.row_count:
        Console(soft_wrap=True, highlight=False).print(table)
    for result in results:
        if result.freed_bytes is not None:
            print(printable(f"{result.node}: freed {human_bytes(result.freed_bytes)}"))
