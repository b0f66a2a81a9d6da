"""``nodeload sandbox compose DIR``."""

from __future__ import annotations

import argparse
import json

from rich.console import Console


def run_sandbox(args: argparse.Namespace, err: Console) -> int:
    """Write the compose topology; say how to bring it up."""
    from nodeload.errors import UsageError

    if args.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, not {args.nodes}")
    try:
        from nodeload.sandbox.compose import compose_command, write_compose
    except ImportError as exc:
        raise UsageError(f"nodeload sandbox needs pip install 'nodeload[sandbox]' ({exc})") from exc
    path = write_compose(args.directory, nodes=args.nodes)
    if args.json:
        print(json.dumps({"compose_file": str(path)}))
    else:
        print(path)
        err.print(f"nodeload: bring it up with {compose_command()} -f {path} up -d", markup=False)
    return 0
