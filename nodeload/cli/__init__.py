"""The ``nodeload`` command line: argument parsing and output over the library.

Imports stay inside the commands, so ``nodeload --help`` does not load grpc, asyncssh or the
Kubernetes client.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nodeload.cli.arguments import build_parser
from nodeload.wording import for_the_command_line

if TYPE_CHECKING:
    from rich.console import Console

    from nodeload.session import Session

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "kubectl_main", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nodeload`` console script."""
    given = list(sys.argv[1:] if argv is None else argv)
    return _leave(_run(build_parser().parse_args(given), given), program=argv is None)


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-nodeload``: ``kubectl nodeload push ...`` (nodes come from the cluster)."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser("kubectl nodeload").parse_args(given)
    args.kubernetes_by_default = True
    return _leave(_run(args, given, kubectl=True), program=argv is None)


def _leave(code: int, *, program: bool) -> int:
    """``code``; after Ctrl-C, run as the program, the process ends here and now. Everything of
    the run is settled by then (leases kept for the rerun, sockets and spools removed), while
    the interpreter's own teardown (grpc's poller, an engine API call left in its thread) can
    hold a person waiting on Ctrl-C for most of a second."""
    if code == EXIT_INTERRUPTED and program:
        atexit._run_exitfuncs()  # what is registered to run at exit still does (temporary files)
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return code


def run_in_session(argv: Sequence[str], kubectl: bool, session: Session) -> int:
    """A push handed to a persistent session (nodeload.persist.server), run there in ``session``."""
    args = build_parser("kubectl nodeload" if kubectl else "nodeload").parse_args(argv)
    args.kubernetes_by_default = kubectl
    return _run(args, argv, kubectl=kubectl, session=session)


def _run(
    args: argparse.Namespace, argv: Sequence[str], *, kubectl: bool = False, session: Session | None = None
) -> int:
    with for_the_command_line():  # messages name settings by their flags
        return _run_command(args, argv, kubectl=kubectl, session=session)


def _run_command(
    args: argparse.Namespace, argv: Sequence[str], *, kubectl: bool, session: Session | None
) -> int:
    in_session = session is not None
    if args.debug:  # before the hand-over: why a session is where it is (or is not) shows too
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    if args.verb == "push" and args.persist and not in_session and not args.dry_run:
        handed = _hand_over(argv, args.persist, kubectl)
        if handed is not None:
            return handed
    from rich.console import Console

    from nodeload.errors import NodeloadError, UsageError
    from nodeload.text import printable

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not in_session:  # a session ends on SIGTERM itself
        _terminate_like_interrupt()
    try:
        if args.verb == "persist":
            return _persist(args.action, err)
        if args.verb == "serve":
            from nodeload.cli.serve import run_serve

            return run_serve(args, err)
        if args.verb == "sandbox":
            from nodeload.cli.sandbox import run_sandbox

            return run_sandbox(args, err)
        if args.verb == "nodes" or (args.verb == "push" and args.dry_run):
            from nodeload.cli.nodes import run_nodes

            return run_nodes(args, err, session)
        if args.verb in ("gc", "cache"):
            from nodeload.cli.gc import run_cache, run_gc

            return run_gc(args, err) if args.verb == "gc" else run_cache(args, err)
        from nodeload.cli.push import run_push

        return run_push(args, err, session)
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


def _hand_over(argv: Sequence[str], persist: float, kubectl: bool) -> int | None:
    """The push's exit status from the persistent session; None (said why) to push here instead."""
    from nodeload.cli.handover import SessionError, hand_over

    try:
        return hand_over(argv, persist, kubectl=kubectl)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED  # our output was closed (| head): the push went on in the session
    except (SessionError, OSError) as err:
        if isinstance(err, SessionError) and err.accepted:  # the session had it: never push twice
            print(f"nodeload: error: {err}", file=sys.stderr)
            return EXIT_FAILED
        print(f"nodeload: no persistent session ({err}); pushing without one", file=sys.stderr)
        return None


def _persist(action: str, err: Console) -> int:
    from nodeload.cli.handover import running, socket_path, stop

    if action == "stop":
        err.print("nodeload: session stopped" if stop() else "nodeload: no session was running", markup=False)
        return EXIT_OK
    if running():
        print(f"running: {socket_path()}")
        return EXIT_OK
    print("not running")
    return EXIT_FAILED


def _terminate_like_interrupt() -> None:
    """SIGTERM (CI cancelling a job, ``kill``) unwinds like Ctrl-C: temporary files are removed."""
    with contextlib.suppress(ValueError):  # not the main thread (tests calling main())

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
