"""``nodeload sandbox compose DIR`` and ``nodeload sandbox cluster up|down|build``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from rich.console import Console


def run_sandbox(args: argparse.Namespace, err: Console) -> int:
    """Write the compose topology, or bring a sandbox cluster up or down."""
    from nodeload.errors import UsageError

    if args.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, not {args.nodes}")
    if args.sandbox_verb == "cluster":
        return _run_cluster(args, err)
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


def _run_cluster(args: argparse.Namespace, err: Console) -> int:
    from nodeload.errors import UsageError

    try:
        from nodeload.sandbox import SandboxError
        from nodeload.sandbox.k8s import Cluster, ensure_binaries, find_cluster, sweep_clusters, teardown
        from nodeload.sandbox.node_image import docker_client
    except ImportError as exc:
        raise UsageError(f"nodeload sandbox needs pip install 'nodeload[sandbox]' ({exc})") from exc
    try:
        if args.cluster_action == "build":
            binaries = ensure_binaries()
            _say(args, err, {"binaries": str(binaries.directory)}, f"Kubernetes {binaries.version} binaries")
            return 0
        if args.cluster_action == "down":
            teardown(find_cluster(args.name), docker_client())
            _say(args, err, {"removed": args.name}, f"cluster {args.name} removed")
            return 0
        sweep_clusters()
        users = tuple(args.users) or ("developer",)
        cluster = Cluster(args.nodes, name=args.name, users=users, detached=True)
        if cluster.directory.exists():
            raise UsageError(
                f"cluster {args.name} is already up: nodeload sandbox cluster down --name {args.name}"
            )
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
    except SandboxError as exc:
        err.print(f"nodeload: {exc}", markup=False)
        return 1
    report = {
        "name": cluster.name,
        "kubeconfig": str(cluster.kubeconfig),
        "users": {user: str(cluster.user_kubeconfig(user)) for user in cluster.users},
        "ssh_config": str(cluster.ssh_config_path),
        "nodes": cluster.node_names,
    }
    _say(args, err, report, f"cluster {cluster.name} is up: {', '.join(cluster.node_names)} Ready")
    if not args.json:
        err.print(
            f"nodeload: kubectl --kubeconfig {cluster.kubeconfig} get nodes; nodes over SSH with "
            f"-F {cluster.ssh_config_path}; remove with nodeload sandbox cluster down --name {cluster.name}",
            markup=False,
        )
    return 0


def _say(args: argparse.Namespace, err: Console, report: Mapping[str, object], text: str) -> None:
    if args.json:
        print(json.dumps(report))
        return
    for key in ("kubeconfig", "binaries"):
        if key in report:
            print(report[key])
    err.print(f"nodeload: {text}", markup=False)
