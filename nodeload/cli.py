"""The ``nodeload`` command line: argument parsing and output over the library (``nodeload.api``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from nodeload import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_TIMEOUT = 60.0  # the library's default (nodeload.containerd.client), without importing grpc
DEFAULT_PARALLEL = 8


def build_parser(prog: str = "nodeload") -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Push container images straight into nodes' containerd over SSH, "
        "sending only the blobs each node lacks.",
    )
    parser.add_argument("--version", action="version", version=f"nodeload {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    push = commands.add_parser(
        "push",
        help="push images to nodes",
        description="Push each IMAGE to each selected node, sending only the blobs the node lacks.\n\n"
        "IMAGE is docker-daemon:REF, oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],\n"
        "or a bare REF from the local Docker daemon.",
        epilog="examples:\n"
        "  nodeload push myapp:dev --node root@10.0.0.11 --node root@10.0.0.12\n"
        "  nodeload push oci:./out:dev --node worker-1 --json\n\n"
        "exit status: 0 every node has every image, 1 a node or a source failed, 2 usage error, "
        "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("images", nargs="+", metavar="IMAGE")
    _selection_arguments(push)
    _push_arguments(push)
    _ssh_arguments(push)
    push.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    push.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


def _selection_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group(
        "nodes",
        "One source of nodes per run: --node alone lists SSH destinations; with --inventory it names "
        "inventory hosts; with a kubeconfig (--kubeconfig, --context, -l, --all-nodes) Kubernetes nodes.",
    )
    group.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NODE",
        help="target node, repeatable: [USER@]HOST[:PORT] (HOST may be an ~/.ssh/config alias), "
        "or a node name of the inventory or cluster",
    )
    group.add_argument("--all-nodes", action="store_true", help="every node of the cluster or inventory")
    group.add_argument("--inventory", type=Path, metavar="FILE", help="an Ansible inventory (INI or YAML)")
    group.add_argument(
        "--limit", metavar="PATTERN", help="Ansible host pattern: groups or hosts, a:b, a:&b, a:!b"
    )
    group.add_argument(
        "--kubeconfig", type=Path, metavar="FILE", help="default $KUBECONFIG, else ~/.kube/config"
    )
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    group.add_argument(
        "-l", "--selector", metavar="SELECTOR", help="Kubernetes label selector, as kubectl takes it"
    )
    group.add_argument(
        "--exclude-control-plane", action="store_true", help="skip nodes labelled as control plane"
    )
    group.add_argument(
        "--address-type",
        choices=("InternalIP", "ExternalIP", "Hostname", "name"),
        default="InternalIP",
        help="which address of a Kubernetes node SSH goes to (default InternalIP; Hostname or name "
        "let ~/.ssh/config aliases do the rest)",
    )
    group.add_argument("--kind-cluster", metavar="NAME", help="the node containers of a local kind cluster")
    group.add_argument(
        "--k3d-cluster", metavar="NAME", help="the server and agent containers of a local k3d cluster"
    )
    group.add_argument("--ssh-user", metavar="USER", help="SSH login for nodes that name none")
    group.add_argument(
        "--sudo",
        action="store_true",
        help="use passwordless sudo on nodes whose login may not open containerd's socket",
    )


def _push_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group("what is written")
    group.add_argument(
        "--namespace",
        default="k8s.io",
        metavar="NS",
        help="containerd namespace (default k8s.io, what kubelet uses; "
        "'default' for nerdctl, 'moby' for Docker's containerd store)",
    )
    group.add_argument(
        "--name", metavar="REF", help="image name on the node (default: the source's own name)"
    )
    group.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="pick from a multi-platform image (default: the node's platform)",
    )
    group.add_argument("--containerd-socket", metavar="PATH", help="containerd socket on the node")
    group.add_argument("--snapshotter", help="snapshotter to unpack into (default: CRI's, else overlayfs)")
    group.add_argument(
        "--no-unpack", action="store_true", help="store the content only; do not unpack layers"
    )
    group.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"nodes worked on at once (default {DEFAULT_PARALLEL})",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long containerd may leave a call unanswered or an upload without progress "
        f"(default {DEFAULT_TIMEOUT:.0f})",
    )


def _ssh_arguments(push: argparse.ArgumentParser) -> None:
    group = push.add_argument_group("ssh")
    group.add_argument(
        "-i",
        "--identity",
        type=Path,
        metavar="FILE",
        help="SSH private key, in addition to ssh-agent and ~/.ssh/config IdentityFile",
    )
    group.add_argument(
        "-F", "--ssh-config", type=Path, metavar="FILE", help="SSH config file (default ~/.ssh/config)"
    )
    group.add_argument(
        "--known-hosts", type=Path, metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)"
    )
    group.add_argument(
        "-J",
        "--jump",
        metavar="[USER@]HOST[:PORT]",
        help="reach the nodes through this jump host (comma-separated for several), as ssh -J",
    )
    group.add_argument(
        "--insecure-skip-host-key-check",
        action="store_true",
        help="do not verify node host keys (unsafe: anyone on the path can impersonate a node)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: a number above 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nodeload`` console script."""
    return _run(build_parser().parse_args(argv))


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-nodeload``: ``kubectl nodeload push ...`` (nodes come from the cluster)."""
    args = build_parser("kubectl nodeload").parse_args(argv)
    args.kubernetes_by_default = True
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nodeload.errors import NodeloadError, UsageError
    from nodeload.text import printable

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    _terminate_like_interrupt()
    try:
        return _push(args, err)
    except KeyboardInterrupt:
        err.print("nodeload: interrupted; rerun the same command to resume", markup=False)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the boundary: a message and a report, never a bare traceback
        known = isinstance(exc, NodeloadError)
        if args.debug or not known:
            logging.getLogger("nodeload").debug("the push failed", exc_info=True)
        text = str(exc) if known else f"internal error: {type(exc).__name__}: {exc}"
        hint = "" if known or args.debug else " (--debug shows where)"
        err.print(f"nodeload: error: {printable(text)}{hint}", markup=False)
        if args.json:  # scripts still get a report to parse
            print(json.dumps(_report(args.images, [], error=text), indent=2))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def _terminate_like_interrupt() -> None:
    """SIGTERM (CI cancelling a job, ``kill``) unwinds like Ctrl-C: temporary files are removed."""
    with contextlib.suppress(ValueError):  # not the main thread (tests calling main())

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)


def _push(args: argparse.Namespace, err: Any) -> int:
    from nodeload.api import PushOptions, push
    from nodeload.errors import UsageError
    from nodeload.nodes.select import NodeSelection, select_nodes
    from nodeload.platforms import Platform
    from nodeload.progress import NullProgress, ProgressSink, RichProgress
    from nodeload.summary import print_failures, print_summary
    from nodeload.transports.ssh import SSHOptions

    if args.ssh_config is not None and not args.ssh_config.is_file():
        raise UsageError(f"-F {args.ssh_config}: no such file")
    nodes = select_nodes(
        NodeSelection(
            names=tuple(args.node),
            all_nodes=args.all_nodes,
            inventory=args.inventory,
            limit=args.limit,
            kubeconfig=args.kubeconfig,
            context=args.context,
            selector=args.selector,
            exclude_control_plane=args.exclude_control_plane,
            address_type=args.address_type,
            ssh_user=args.ssh_user,
            sudo=args.sudo,
            kind_cluster=args.kind_cluster,
            k3d_cluster=args.k3d_cluster,
            kubernetes_by_default=getattr(args, "kubernetes_by_default", False),
        )
    )
    if args.insecure_skip_host_key_check:
        err.print(
            "warning: --insecure-skip-host-key-check: node host keys are NOT verified; anyone on the "
            "network path can pose as a node, receive the image and fake containerd's answers",
            markup=False,
        )
    options = PushOptions(
        namespace=args.namespace,
        name=args.name,
        platform=Platform.parse(args.platform) if args.platform else None,
        containerd_socket=args.containerd_socket,
        snapshotter=args.snapshotter,
        unpack=not args.no_unpack,
        timeout=args.timeout,
        parallel=args.parallel,
        ssh=SSHOptions(
            identity=args.identity,
            ssh_config=args.ssh_config,
            known_hosts=args.known_hosts,
            verify_host_keys=not args.insecure_skip_host_key_check,
            jump=args.jump,
        ),
    )

    def notify(text: str) -> None:  # stderr: --json output on stdout stays clean
        err.print(text if text.startswith("warning:") else f"nodeload: {text}", markup=False)

    bars = err.is_terminal and not args.json
    shown: AbstractContextManager[ProgressSink]
    shown = RichProgress(err) if bars else contextlib.nullcontext(NullProgress())
    with shown as progress:
        results = push(args.images, nodes, options, progress=progress, notify=notify)
    if args.json:
        print(json.dumps(_report(args.images, [r.to_json() for r in results]), indent=2))
        print_failures(err, results)
    else:
        print_summary(err, results)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _report(images: Sequence[str], nodes: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    """The ``--json`` document: one entry per (image, node) under ``nodes``."""
    return {"images": list(images), "error": error, "nodes": nodes}


if __name__ == "__main__":
    sys.exit(main())
