"""The ``nodeload`` command line: argument parsing and output over the library.

Imports stay inside the commands, so ``nodeload --help`` does not load grpc, asyncssh or the
Kubernetes client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
from collections.abc import Sequence

from nodeload.cli.arguments import build_parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "kubectl_main", "main"]


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
        if args.verb == "serve":
            from nodeload.cli.serve import run_serve

            return run_serve(args, err)
        if args.verb == "sandbox":
            from nodeload.cli.sandbox import run_sandbox

            return run_sandbox(args, err)
        if args.verb in ("gc", "cache"):
            from nodeload.cli.gc import run_cache, run_gc

            return run_gc(args, err) if args.verb == "gc" else run_cache(args, err)
        from nodeload.cli.push import run_push

        return run_push(args, err)
    except KeyboardInterrupt:
        err.print("nodeload: interrupted; rerun the same command to resume", markup=False)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the boundary: a message and a report, never a bare traceback
        known = isinstance(exc, NodeloadError)
        if args.debug or not known:
            logging.getLogger("nodeload").debug("the command failed", exc_info=True)
        text = str(exc) if known else f"internal error: {type(exc).__name__}: {exc}"
        hint = "" if known or args.debug else " (--debug shows where)"
        err.print(f"nodeload: error: {printable(text)}{hint}", markup=False)
        if args.json:  # scripts still get a report to parse
            print(json.dumps({"images": getattr(args, "images", []), "error": text, "nodes": []}, indent=2))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def _terminate_like_interrupt() -> None:
    """SIGTERM (CI cancelling a job, ``kill``) unwinds like Ctrl-C: temporary files are removed."""
    with contextlib.suppress(ValueError):  # not the main thread (tests calling main())

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
