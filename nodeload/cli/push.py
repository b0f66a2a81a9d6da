"""``nodeload push``."""

from __future__ import annotations

import argparse
import contextlib
import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from rich.console import Console

from nodeload.cli.common import notifier, selected_nodes, ssh_options

if TYPE_CHECKING:
    from nodeload.report import NodeResult
    from nodeload.rollout import Cluster, RestartReport
    from nodeload.session import Session


def run_push(args: argparse.Namespace, err: Console, session: Session | None = None) -> int:
    """Push each image to each selected node (in ``session``, a persistent one's); the exit status."""
    from nodeload.api import push
    from nodeload.options import FanoutOptions, PushOptions, StoreOptions
    from nodeload.platforms import Platform
    from nodeload.progress import NullProgress, ProgressSink
    from nodeload.sources.base import SourceOptions
    from nodeload.summary import print_failures, print_summary
    from nodeload.text import printable

    ssh = ssh_options(args, err)
    cluster = _restart_cluster(args) if args.restart else None  # before pushing: a bad kubeconfig
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
    restarted = _restart(cluster, results, args.rollout_timeout, err) if cluster is not None else None
    if args.json:
        report: dict[str, Any] = {
            "images": list(args.images),
            "error": None,
            "nodes": [r.to_json() for r in results],
        }
        if restarted is not None:
            report["restart"] = restarted.to_json()
        print(json.dumps(report, indent=2))
        print_failures(err, results)
    else:
        print_summary(err, results)
    if restarted is not None and restarted.error:
        err.print(f"nodeload: error: {printable(restarted.error)}", markup=False)
    pushed = all(r.ok for r in results)
    return 0 if pushed and (restarted is None or restarted.ok) else 1


def _restart_cluster(args: argparse.Namespace) -> Cluster:
    """The cluster whose workloads ``--restart`` restarts: the one the nodes come from."""
    from nodeload.cli.common import node_selection
    from nodeload.errors import UsageError
    from nodeload.nodes.kubernetes import KubeSelection, selection_configuration
    from nodeload.rollout import Cluster

    selection = node_selection(args)
    if selection.kind != "kubernetes":
        raise UsageError(
            "--restart restarts workloads through the Kubernetes API: take the nodes from a "
            "kubeconfig (--all-nodes, --kubeconfig/--context, -l, or kubectl nodeload)"
        )
    kube = KubeSelection(kubeconfig=selection.kubeconfig, context=selection.context)
    return Cluster(selection_configuration(kube))


def _restart(cluster: Cluster, results: list[NodeResult], timeout: float, err: Console) -> RestartReport:
    from nodeload.rollout import pushed_images, restart

    try:
        return restart(cluster, pushed_images(results), timeout=timeout, say=notifier(err))
    finally:
        cluster.close()
