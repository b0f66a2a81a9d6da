"""The ``nodeload`` command line: a few lines per command over the library."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.console import Console

from nodeload import __version__
from nodeload.containerd.client import DEFAULT_TIMEOUT
from nodeload.errors import NodeloadError, UsageError
from nodeload.image import ImageSource
from nodeload.platforms import Platform
from nodeload.progress import NullProgress, ProgressSink, RichProgress
from nodeload.push import Prepared, push_all
from nodeload.reference import parse_reference
from nodeload.report import summary_line
from nodeload.sources import open_source, parse_source
from nodeload.sources.base import name_or_none
from nodeload.targets.containerd import CRI_NAMESPACE, TargetOptions
from nodeload.text import printable
from nodeload.transports.ssh import SSHOptions, SSHTransport

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# containerd's own rule for namespace names.
NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="nodeload",
        description="Push container images straight into nodes' containerd over SSH, "
        "sending only the blobs each node lacks.",
    )
    parser.add_argument("--version", action="version", version=f"nodeload {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    push = commands.add_parser(
        "push",
        help="push an image to nodes",
        description="Push IMAGE to each --node, sending only the blobs the node lacks.\n\n"
        "IMAGE is docker-daemon:REF, oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],\n"
        "or a bare REF from the local Docker daemon.",
        epilog="examples:\n"
        "  nodeload push myapp:dev --node root@10.0.0.11 --node root@10.0.0.12\n"
        "  nodeload push oci:./out:dev --node worker-1 --json\n\n"
        "exit status: 0 every node has the image, 1 a node or the source failed, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("image", metavar="IMAGE")
    push.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="[USER@]HOST[:PORT]",
        help="target node, repeatable; HOST may be an ~/.ssh/config alias",
    )
    push.add_argument(
        "--namespace",
        default=CRI_NAMESPACE,
        metavar="NS",
        help="containerd namespace (default k8s.io, what kubelet uses; "
        "'default' for nerdctl, 'moby' for Docker's containerd store)",
    )
    push.add_argument("--name", metavar="REF", help="image name on the node (default: the source's own name)")
    push.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="pick from a multi-platform image (default: the node's platform)",
    )
    push.add_argument("--containerd-socket", metavar="PATH", help="containerd socket on the node")
    push.add_argument("--snapshotter", help="snapshotter to unpack into (default: CRI's, else overlayfs)")
    push.add_argument("--no-unpack", action="store_true", help="store the content only; do not unpack layers")
    push.add_argument(
        "-i",
        "--identity",
        type=Path,
        metavar="FILE",
        help="SSH private key, in addition to ssh-agent and ~/.ssh/config IdentityFile",
    )
    push.add_argument(
        "-F", "--ssh-config", type=Path, metavar="FILE", help="SSH config file (default ~/.ssh/config)"
    )
    push.add_argument(
        "--known-hosts", type=Path, metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)"
    )
    push.add_argument(
        "--insecure-skip-host-key-check",
        action="store_true",
        help="do not verify node host keys (unsafe: anyone on the path can impersonate a node)",
    )
    push.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long containerd may leave a call unanswered or an upload without progress "
        f"(default {DEFAULT_TIMEOUT:.0f})",
    )
    push.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    push.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


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
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    _terminate_like_interrupt()
    try:
        return _push(args, err)
    except KeyboardInterrupt:
        err.print("nodeload: interrupted; rerun the same command to resume", markup=False)
        return 130
    except Exception as exc:  # the boundary: a message and a report, never a bare traceback
        if args.debug or not isinstance(exc, NodeloadError):
            logging.getLogger("nodeload").debug("the push failed", exc_info=True)
        text = str(exc) if isinstance(exc, NodeloadError) else f"internal error: {type(exc).__name__}: {exc}"
        hint = "" if isinstance(exc, NodeloadError) or args.debug else " (--debug shows where)"
        err.print(f"nodeload: error: {printable(text)}{hint}", markup=False)
        if args.json:  # scripts still get a report to parse
            print(json.dumps({"image": args.image, "error": text, "nodes": []}, indent=2))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def _terminate_like_interrupt() -> None:
    """SIGTERM (CI cancelling a job, ``kill``) unwinds like Ctrl-C: temporary files are removed."""
    with contextlib.suppress(ValueError):  # not the main thread (tests calling main())

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)


def _push(args: argparse.Namespace, err: Console) -> int:
    if not args.node:
        raise UsageError("no target node: pass --node [USER@]HOST[:PORT] (repeatable)")
    if not NAMESPACE.fullmatch(args.namespace):
        raise UsageError(
            f"invalid namespace {args.namespace!r}: containerd namespaces are letters and digits "
            "separated by . _ or - (k8s.io, default, moby)"
        )
    platform = Platform.parse(args.platform) if args.platform else None
    if args.ssh_config is not None and not args.ssh_config.is_file():
        raise UsageError(f"-F {args.ssh_config}: no such file")
    if args.insecure_skip_host_key_check:
        err.print(
            "warning: --insecure-skip-host-key-check: node host keys are NOT verified; anyone on the "
            "network path can pose as a node, receive the image and fake containerd's answers",
            markup=False,
        )
    ssh = SSHOptions(
        identity=args.identity,
        ssh_config=args.ssh_config,
        known_hosts=args.known_hosts,
        verify_host_keys=not args.insecure_skip_host_key_check,
    )
    transports = [SSHTransport(node, ssh) for node in args.node]  # validates node syntax early
    for transport in transports:
        transport.check_config()  # a bad -F file is a usage error, not one failure per node

    with contextlib.ExitStack() as stack:

        def prepare() -> Prepared:
            source = _open(args.image, stack)
            name, from_source = _target_name(args.name, args.image, source)
            if from_source:
                shown = printable(name)
                note = f"nodeload: using the name {shown} found inside the source (--name sets another)"
                err.print(note, markup=False)
            _warn_floating(name, err)  # stderr: --json output on stdout stays clean
            target = TargetOptions(
                namespace=args.namespace,
                name=name,
                platform=platform,
                snapshotter=args.snapshotter,
                unpack=not args.no_unpack,
                name_from_source=from_source,
            )
            return Prepared(source, target)

        bars = err.is_terminal and not args.json
        shown: AbstractContextManager[ProgressSink]
        shown = RichProgress(err) if bars else contextlib.nullcontext(NullProgress())
        with shown as progress:
            results = asyncio.run(
                push_all(prepare, transports, progress, socket=args.containerd_socket, timeout=args.timeout)
            )
    if args.json:
        report: dict[str, Any] = {"image": args.image, "nodes": [r.to_json() for r in results]}
        print(json.dumps(report, indent=2))
    else:
        for result in results:
            err.print(printable(summary_line(result)), markup=False)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _open(text: str, stack: contextlib.ExitStack) -> ImageSource:
    source = open_source(text)
    if isinstance(source, contextlib.AbstractContextManager):
        stack.enter_context(source)
    return source


def _target_name(explicit: str | None, image: str, source: ImageSource) -> tuple[str, bool]:
    """The name to create on the nodes, and whether it came from inside the source.

    A name the user wrote (``--name``, or the IMAGE argument itself, as in ``myapp:dev``)
    may replace an existing image; one read from the source's RepoTags or annotations
    may not (see ContainerdTarget).
    """
    if explicit:
        return parse_reference(explicit).normalized(), False
    if not source.reference:
        raise UsageError("the source image has no name of its own: give the name to create with --name REF")
    name = parse_reference(source.reference).normalized()
    written = parse_source(image).ref
    return name, not (written and name_or_none(written) == name)


def _warn_floating(name: str, err: Console) -> None:
    if parse_reference(name).floats:
        err.print(
            f"warning: {name} uses the :latest tag, so kubelet defaults to imagePullPolicy: Always "
            "and will try to pull it from a registry; push a specific tag, "
            "or set imagePullPolicy: IfNotPresent",
            markup=False,
        )


if __name__ == "__main__":
    sys.exit(main())
