"""``nodeload sandbox up|down|status``, ``compose DIR`` and ``cluster up|down|build``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from rich.console import Console


def run_sandbox(args: argparse.Namespace, err: Console) -> int:
    """Write the compose topology, or bring a sandbox cluster up or down."""
    from nodeload.errors import UsageError

    if getattr(args, "nodes", 1) < 1:
        raise UsageError(f"--nodes must be at least 1, not {args.nodes}")
    if args.sandbox_verb == "cluster":
        return _run_cluster(args, err)
    if args.sandbox_verb in ("up", "down", "status"):
        return _run_kept(args, err)
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


def _run_kept(args: argparse.Namespace, err: Console) -> int:
    from nodeload.errors import UsageError

    try:
        from nodeload.sandbox import SandboxError, kept
    except ImportError as exc:
        raise UsageError(f"nodeload sandbox needs pip install 'nodeload[sandbox]' ({exc})") from exc
    try:
        if args.sandbox_verb == "down":
            removed = kept.down(args.name)
            _say(args, err, {"removed": args.name, "containers": removed}, f"sandbox {args.name} removed")
            return 0
        if args.sandbox_verb == "status":
            return _kept_status(args, err)
        record, _ = kept.up(args.name, kept.variants(args.variants, args.nodes))
    except SandboxError as exc:
        err.print(f"nodeload: {exc}", markup=False)
        return 1
    config = record.ssh_config_path
    nodes = " ".join(f"--node {alias}" for alias in record.aliases)
    _say(args, err, record.to_json(), f"sandbox {args.name} is up: {', '.join(record.aliases)}")
    if not args.json:
        print(config)
        down = "nodeload sandbox down" + ("" if args.name == "nodeload" else f" --name {args.name}")
        err.print(
            f"nodeload: ssh -F {config} {record.aliases[0]}\n"
            f"nodeload: nodeload push IMAGE -F {config} {nodes}\n"
            f"nodeload: remove with: {down}",
            markup=False,
        )
    return 0


def _kept_status(args: argparse.Namespace, err: Console) -> int:
    from nodeload.sandbox import kept

    found = kept.find(args.name)
    if found is None:
        _say(args, err, {"name": args.name, "up": False}, f"no sandbox {args.name} is up")
        return 1
    nodes = kept.status(found)
    if args.json:
        report = found.to_json() | {"up": True, "containers": [vars(n) for n in nodes]}
        print(json.dumps(report))
    else:
        print(found.ssh_config_path)
        for node in nodes:
            where = f"127.0.0.1:{node.port}" if node.port else "through the bastion"
            err.print(f"nodeload: {node.alias}: {node.state} ({node.container}, {where})", markup=False)
    return 0 if all(n.state == "running" for n in nodes) else 1


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
