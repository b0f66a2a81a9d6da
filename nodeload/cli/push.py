"""``nodeload push``."""

from __future__ import annotations

import argparse
import contextlib
import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from rich.console import Console

from nodeload.cli.common import notifier, selected_nodes, ssh_options

if TYPE_CHECKING:
    from nodeload.session import Session


def run_push(args: argparse.Namespace, err: Console, session: Session | None = None) -> int:
    """Push each image to each selected node (in ``session``, a persistent one's); the exit status."""
    from nodeload.api import push
    from nodeload.options import FanoutOptions, PushOptions, StoreOptions
    from nodeload.platforms import Platform
    from nodeload.progress import NullProgress, ProgressSink
    from nodeload.sources.base import SourceOptions
    from nodeload.summary import print_failures, print_summary

    ssh = ssh_options(args, err)
    nodes = selected_nodes(args, err)
    options = PushOptions(
        source=SourceOptions(
            tls_verify=args.src_tls_verify,
            containerd_address=args.source_socket,
            containerd_namespace=args.source_namespace,
            export=args.export,
        ),
        ssh=ssh,
        store=StoreOptions(
            kind=args.store,
            namespace=args.namespace,
            name=args.name,
            platform=Platform.parse(args.platform) if args.platform else None,
            socket=args.containerd_socket,
            snapshotter=args.snapshotter,
            unpack=not args.no_unpack,
            timeout=args.timeout,
        ),
        fanout=FanoutOptions(
            parallel=args.parallel, retries=args.retries, seeds=args.seeds, mirror_check=args.mirror_check
        ),
    )
    bars = err.is_terminal and not args.json
    shown: AbstractContextManager[ProgressSink]
    if bars:
        from nodeload.progress_bars import RichProgress

        shown = RichProgress(err)
    else:
        shown = contextlib.nullcontext(NullProgress())
    with shown as progress:
        results = push(args.images, nodes, options, progress=progress, notify=notifier(err), session=session)
    if args.json:
        report = {"images": list(args.images), "error": None, "nodes": [r.to_json() for r in results]}
        print(json.dumps(report, indent=2))
        print_failures(err, results)
    else:
        print_summary(err, results)
    return 0 if all(r.ok for r in results) else 1
