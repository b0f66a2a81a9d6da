"""``nodeload gc`` and ``nodeload cache prune``."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import timedelta

from rich.console import Console
from rich.table import Table

from nodeload.cli.common import selected_nodes, ssh_options


def run_gc(args: argparse.Namespace, err: Console) -> int:
    """Reclaim abandoned leases and uploads on the selected nodes; 1 when a node could not be."""
    from nodeload.errors import UsageError
    from nodeload.gc import GcOptions, collect
    from nodeload.leftovers import DEFAULT_OLDER_THAN
    from nodeload.report import human_bytes
    from nodeload.text import printable

    nodes = selected_nodes(args, err)
    if not nodes:
        raise UsageError("no node to collect on: --node NODE, --all-nodes...")
    options = GcOptions(
        namespaces=tuple(args.namespace),
        older_than=args.older_than or DEFAULT_OLDER_THAN,
        dry_run=args.dry_run,
        socket=args.containerd_socket,
        timeout=args.timeout,
        ssh=ssh_options(args, err),
    )
    results = asyncio.run(collect(nodes, options))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "nodes": [r.to_json() for r in results]}, indent=2))
    else:
        verb = "would remove" if args.dry_run else "removed"
        table = Table(title=f"nodeload gc: {verb}")
        for header in ("node", "namespace", "what", "id", "why", "disk"):
            table.add_column(header)
        for result in results:
            for item in result.reclaimed:
                disk = human_bytes(item.bytes) if item.kind == "ingest" else ""
                table.add_row(result.node, item.namespace, item.kind, item.id, item.reason, disk)
        checked = ", ".join(printable(r.node) for r in results if r.ok) or "no node"
        if table.row_count:
            Console(soft_wrap=True).print(table)
            print(f"looked through {checked}")
        else:
            print(f"nothing to remove on {checked}: no abandoned nodeload lease or upload")
        for result in results:
            if result.error:
                err.print(f"nodeload: {printable(result.node)}: {printable(result.error)}", markup=False)
    return 0 if all(r.ok for r in results) else 1


def run_cache(args: argparse.Namespace, err: Console) -> int:
    """``cache prune``: drop layers of the local cache; what it freed."""
    from nodeload.report import human_bytes
    from nodeload.sources.layer_cache import LayerCache

    cache = LayerCache()
    everything = args.older_than is None and args.max_size is None
    pruned = cache.prune(timedelta(0) if everything else args.older_than, args.max_size)
    if args.json:
        print(json.dumps({"cache": str(cache.root), **vars(pruned)}, indent=2))
    else:
        print(
            f"removed {pruned.layers} layer(s) and {pruned.configs} config(s) from {cache.root}, freeing "
            f"{human_bytes(pruned.freed)}; the layers left take {human_bytes(pruned.kept)}"
        )
    return 0
