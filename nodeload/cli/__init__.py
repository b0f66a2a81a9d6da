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
from typing import TYPE_CHECKING, TextIO

from nodeload.cli.arguments import AUTO, build_parser, persist_seconds
from nodeload.wording import for_the_command_line

if TYPE_CHECKING:
    from rich.console import Console

    from nodeload.session import Session

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "kubectl_main", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nodeload`` console script."""
    if argv is None and "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (and exits)
        from nodeload.cli.completion import complete

        complete(build_parser)
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse_arguments(given)
    return args if isinstance(args, int) else _leave(_run(args, given), program=argv is None)


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-nodeload``: ``kubectl nodeload push ...`` (nodes come from the cluster)."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = parse_arguments(given, "kubectl nodeload")
    if isinstance(args, int):
        return args
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


def run_in_session(
    argv: Sequence[str],
    kubectl: bool,
    session: Session,
    *,
    stderr: TextIO | None = None,
    columns: int | None = None,
) -> int:
    """A push handed to a persistent session (nodeload.persist.server), run there in ``session``;
    messages and progress to ``stderr`` (default: ``sys.stderr``), drawn ``columns`` wide."""
    args = parse_arguments(argv, "kubectl nodeload" if kubectl else "nodeload")
    if isinstance(args, int):
        return args
    args.kubernetes_by_default = kubectl
    return _run(args, argv, kubectl=kubectl, session=session, stderr=stderr, columns=columns)


def parse_arguments(argv: Sequence[str], prog: str = "nodeload") -> argparse.Namespace | int:
    """``argv`` with the config file's defaults (nodeload.cli.config); exit status 2 for a bad file."""
    from nodeload.cli.config import ConfigError, parse

    try:
        return parse(lambda: build_parser(prog), argv)
    except ConfigError as exc:
        if argv[:1] == ["completion"]:  # a shell's startup file must not break on it
            return parse(lambda: build_parser(prog), argv, read_file=False)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(
    args: argparse.Namespace,
    argv: Sequence[str],
    *,
    kubectl: bool = False,
    session: Session | None = None,
    stderr: TextIO | None = None,
    columns: int | None = None,
) -> int:
    with for_the_command_line():  # messages name settings by their flags
        return _run_command(args, argv, kubectl=kubectl, session=session, stderr=stderr, columns=columns)


def _run_command(
    args: argparse.Namespace,
    argv: Sequence[str],
    *,
    kubectl: bool,
    session: Session | None,
    stderr: TextIO | None,
    columns: int | None,
) -> int:
    in_session = session is not None
    if args.debug:  # before the hand-over: why a session is where it is (or is not) shows too
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    if args.verb == "completion":
        from nodeload.cli.completion import shell_script

        print(shell_script(args.shell), end="")
        return EXIT_OK
    if args.verb == "push" and not in_session and not args.dry_run:
        asked = args.persist is not AUTO
        seconds = persist_seconds(args.persist, terminal=sys.stderr.isatty(), environ=os.environ)
        if seconds is not None:
            handed = _hand_over(argv, seconds, kubectl, asked=asked)
            if handed is not None:
                return handed
    from rich.console import Console

    from nodeload.errors import NodeloadError, UsageError
    from nodeload.text import printable

    # The stream itself, not "whatever sys.stderr is when writing": a session's progress display
    # draws from a thread of its own, and must still reach this push's caller.
    err = Console(file=stderr or sys.stderr, width=columns, highlight=False, soft_wrap=True)
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
        if args.verb in ("images", "rm"):
            from nodeload.cli.images import run_images, run_rm

            return run_images(args, err, session) if args.verb == "images" else run_rm(args, err, session)
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
        if isinstance(exc, UsageError) and hasattr(args, "origins"):
            hint = args.origins.note()
        err.print(f"nodeload: error: {printable(text)}{hint}", markup=False)
        if args.json:  # scripts still get a report to parse
            print(json.dumps({"images": getattr(args, "images", []), "error": text, "nodes": []}, indent=2))
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def _hand_over(argv: Sequence[str], persist: float, kubectl: bool, *, asked: bool) -> int | None:
    """The push's exit status from the persistent session; None to push here instead (said why
    when the session was ``asked`` for, logged when it is only the default)."""
    from nodeload.cli.handover import SessionError, hand_over

    def started() -> None:
        print(
            f"nodeload: started a background session that keeps the nodes' connections open for "
            f"{_minutes(persist)} after the last push (nodeload persist stop ends it; --no-persist or "
            "NODELOAD_PERSIST=0 pushes without one)",
            file=sys.stderr,
            flush=True,
        )

    try:
        return hand_over(argv, persist, kubectl=kubectl, started=started)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED  # our output was closed (| head): the push went on in the session
    except (SessionError, OSError) as err:
        if isinstance(err, SessionError) and err.accepted:  # the session had it: never push twice
            print(f"nodeload: error: {err}", file=sys.stderr)
            return EXIT_FAILED
        if asked:
            print(f"nodeload: no persistent session ({err}); pushing without one", file=sys.stderr)
        else:
            logging.getLogger("nodeload").debug("no persistent session (%s); pushing without one", err)
        return None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"


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
