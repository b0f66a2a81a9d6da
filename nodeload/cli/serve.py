"""``nodeload serve -- CMD``."""

from __future__ import annotations

import argparse
import asyncio
import json

from rich.console import Console

from nodeload.cli.common import notifier, selected_nodes, ssh_options


def run_serve(args: argparse.Namespace, err: Console) -> int:
    """Serve the nodes as a registry while the command runs; the command's exit status (or 1)."""
    from nodeload.errors import UsageError
    from nodeload.registry.server import ServeOptions, serve_async
    from nodeload.summary import print_serve_summary

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    options = ServeOptions(
        namespace=args.namespace,
        listen=args.listen,
        socket=args.containerd_socket,
        timeout=args.timeout,
        ssh=ssh_options(args, err),
    )
    nodes = selected_nodes(args, err)
    if not nodes:
        raise UsageError("no node to serve")

    def ready(address: str, env: dict[str, str]) -> None:
        if command:
            err.print(f"nodeload: serving {len(nodes)} node(s) at {address}", markup=False)
            return
        exports = " ".join(f"{key}={value}" for key, value in env.items())
        err.print(f"nodeload: serving {len(nodes)} node(s) at {address}; Ctrl-C stops it", markup=False)
        print(f"export {exports}", flush=True)

    try:
        running = serve_async(
            nodes, options, command or None, notify=notifier(err), ready=ready, stdout_to_stderr=args.json
        )
        outcome = asyncio.run(running)
    except KeyboardInterrupt:
        if command:
            raise
        err.print("nodeload: registry stopped", markup=False)  # how a command-less serve ends
        return 0
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        print_serve_summary(err, outcome)
    if outcome.command_status:
        return outcome.command_status
    return 0 if outcome.nodes_ok else 1
