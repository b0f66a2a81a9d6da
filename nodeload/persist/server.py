"""The persistent session: a background process that runs the pushes handed to it.

``python -m nodeload.persist.server FD DIR NAME`` (started by :mod:`nodeload.cli.handover`, which hands it its
session directory open as FD). Each push runs exactly as the command line would run it, in the
caller's directory and environment and with its output sent back, in a thread of its own:
pushes from the same directory and environment run at once, one from elsewhere waits for them
(the process has one environment). Between pushes the nodes' SSH connections stay open in a
:class:`nodeload.session.Session`, one per node per push running at once. It ends after the idle
time the last push asked for (``--persist``), on ``nodeload persist stop``, or on SIGTERM,
interrupting what runs and closing every connection.

Only its own user reaches it: the socket is 0600 in a 0700 directory, and each caller's
credentials (SO_PEERCRED) are checked too. Its socket and lock are reached through the
directory's descriptor (:class:`~nodeload.cli.handover.SessionDir`), never by a path. A
caller that goes away mid-push (Ctrl-C), or stops reading its output, interrupts the push as
Ctrl-C would."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from nodeload.cli.arguments import DEFAULT_PERSIST
from nodeload.cli.handover import MAX_MESSAGE, SessionDir

if TYPE_CHECKING:
    from nodeload.session import Session as LibrarySession

# A caller that reads none of its push's output for this long is treated as gone: its push is
# interrupted rather than left to block the session's writes (a suspended `nodeload push`).
SEND_SECONDS = 60.0
_POLL_SECONDS = 0.5  # how often the accept loop looks at the idle clock and for a stop
# Variables that differ between the terminals of one user without changing what a push does:
# pushes that differ only in these run at once (the width is handed to each push itself).
_PER_TERMINAL = frozenset({"COLUMNS", "LINES"})


class _Caller:
    """The caller of one push: its output goes back as ``{"fd": N, "data": ...}`` lines (from any
    thread: the push's own, or its progress display's), and its going away, or its not reading
    for ``SEND_SECONDS``, interrupts the push."""

    def __init__(self, conn: socket.socket, interrupt: Callable[[], None], send_seconds: float) -> None:
        self._conn = conn
        self._interrupt = interrupt
        self._sending = threading.Lock()
        self._state = threading.Lock()
        self._finished = False
        self._interrupted = False
        self.gone = threading.Event()  # the caller takes no more output
        whole, part = divmod(send_seconds, 1.0)
        # A blocking socket with a send timeout: a write that waits longer fails (EAGAIN).
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(whole), int(part * 1e6)))
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        """Watch for the caller going away."""
        self._watcher.start()

    def send(self, message: dict[str, Any]) -> None:
        """Send ``message``; a caller that does not take it is gone (see the class)."""
        if self.gone.is_set():
            return
        with self._sending:
            try:
                self._conn.sendall(json.dumps(message).encode() + b"\n")
            except OSError as err:
                self._lost("stalled" if isinstance(err, BlockingIOError) else "gone")

    def _watch(self) -> None:
        with contextlib.suppress(OSError):
            while self._conn.recv(4096):
                pass  # callers send nothing after the request: only its end matters
        # Ctrl-C on the caller's side closes its half: it still reads the push's last words.
        self._lost("interrupted", still_reading=True)

    def _lost(self, how: str, *, still_reading: bool = False) -> None:
        with self._state:  # never after done(): the interrupt is the push's, or nobody's
            if self._finished or self.gone.is_set() or self._interrupted:
                if not still_reading:
                    self.gone.set()
                return
            self._interrupted = True
            if not still_reading:
                self.gone.set()
        _log(f"caller {how}: interrupting its push")
        self._interrupt()

    @property
    def left(self) -> bool:
        """Whether the caller interrupted its push or went away."""
        return self._interrupted or self.gone.is_set()

    def done(self) -> None:
        """The push is over: the caller's going away from now on interrupts nothing."""
        with self._state:
            self._finished = True


class _Output(io.TextIOBase):
    """A text stream whose writes go to the caller as ``{"fd": N, "data": ...}`` lines."""

    def __init__(self, caller: _Caller, fd: int, terminal: bool) -> None:
        self._caller, self._fd, self._terminal = caller, fd, terminal

    def write(self, text: str) -> int:
        if text:
            self._caller.send({"fd": self._fd, "data": text})
        return len(text)

    def isatty(self) -> bool:
        return self._terminal

    def writable(self) -> bool:
        return True


class _ByThread(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` of the session: what a push's thread writes goes to its
    caller, anything else to the session's log."""

    def __init__(self, log: TextIO) -> None:
        self._log = log
        self._local = threading.local()

    def use(self, stream: io.TextIOBase | None) -> None:
        """Send this thread's writes to ``stream`` (None: the log again)."""
        self._local.stream = stream

    def _target(self) -> TextIO | io.TextIOBase:
        return getattr(self._local, "stream", None) or self._log

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def writable(self) -> bool:
        return True


class _Admission:
    """Which pushes run at once. They share the process's environment and working directory,
    so pushes from the same directory and environment run together, and one from elsewhere waits
    until they are done, then has the process to itself and its own."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._key: tuple[str, tuple[tuple[str, str], ...]] | None = None
        self._saved_env = dict(os.environ)
        self._last_end = time.monotonic()

    def idle_seconds(self) -> float:
        """How long no push has run (0 while one does)."""
        with self._changed:
            return 0.0 if self._running else time.monotonic() - self._last_end

    @contextlib.contextmanager
    def admitted(
        self, request: dict[str, Any], caller: _Caller, say: Callable[[str], object]
    ) -> Iterator[bool]:
        """Run the push of ``request`` in its directory and environment once they are the
        process's; yields False if its caller went away meanwhile (then it must not run)."""
        env = {k: v for k, v in request["env"].items() if k not in _PER_TERMINAL}
        key = (str(request.get("cwd") or "/"), tuple(sorted(env.items())))
        with self._changed:
            if self._running and self._key != key:
                say("nodeload: waiting for the session's pushes from another directory or environment\n")
            while self._running and self._key != key and not caller.left:
                self._changed.wait(_POLL_SECONDS)
            admitted = not caller.left
            if admitted and not self._running:
                self._key = key
                os.environ.clear()
                os.environ.update(env)
                tempfile.tempdir = None  # $TMPDIR is the caller's
                os.chdir(key[0])
            self._running += admitted
        if not admitted:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                self._running -= 1
                if not self._running:
                    self._restore()
                    self._last_end = time.monotonic()
                    self._changed.notify_all()

    def _restore(self) -> None:
        os.environ.clear()
        os.environ.update(self._saved_env)
        tempfile.tempdir = None
        os.chdir("/")  # never hold (or depend on) a caller's directory between pushes
        _reset_logging()
        self._key = None


class Server:
    """The accept loop, the idle clock and the library session of one persistent session."""

    def __init__(self, where: SessionDir, name: str) -> None:
        """Serve on the socket ``NAME.sock`` of ``where`` (see :meth:`serve`)."""
        self.where = where
        self.socket = f"{name}.sock"
        self.lock = f"{name}.lock"
        self.idle = DEFAULT_PERSIST
        self.send_seconds = SEND_SECONDS
        self.library = _library_session()
        self._admission = _Admission()
        self._stopping = threading.Event()
        self._stdout = _ByThread(sys.stdout)
        self._stderr = _ByThread(sys.stderr)

    def serve(self) -> None:
        """Accept pushes, each in a thread of its own, until idle for too long, stopped, or
        terminated; then interrupt those still running and close every connection."""
        handlers: list[threading.Thread] = []
        sys.stdout, sys.stderr = self._stdout, self._stderr
        try:
            with self._listening() as listener:
                if listener is None:
                    return  # another session already answers on this socket
                signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
                listener.settimeout(_POLL_SECONDS)
                while not self._stopping.is_set():
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        if self._admission.idle_seconds() > self.idle:
                            break
                        continue
                    except InterruptedError:
                        continue
                    handler = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                    handler.start()
                    handlers = [h for h in handlers if h.is_alive()] + [handler]
            # The socket is gone: a push from now on starts a session of its own.
            for handler in handlers:
                if handler.ident is not None:
                    self.library.interrupt(handler.ident)
            for handler in handlers:
                handler.join(timeout=30)
        finally:
            self.library.close()
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__

    @contextlib.contextmanager
    def _listening(self) -> Iterator[socket.socket | None]:
        """The bound socket; None when a running session already owns the path. Starting
        sessions take a lock, so that two pushes starting one at once get the same."""
        address = self.where.address(self.socket)
        with os.fdopen(self.where.open_file(self.lock, os.O_WRONLY | os.O_APPEND), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(address)
                yield None
                return
            except OSError:
                pass
            finally:
                probe.close()
            self.where.remove(self.socket)  # left by a session that was killed
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                listener.bind(address)
            finally:
                os.umask(old)
            listener.listen(8)
            fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            yield listener
        finally:
            listener.close()
            self.where.remove(self.socket)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                if not _same_user(conn):
                    return
                request = _read_request(conn)
            except (OSError, ValueError):
                return
            conn.settimeout(None)
            if request.get("stop") is True:
                self._stopping.set()
                with contextlib.suppress(OSError):
                    conn.sendall(b'{"exit": 0}\n')
                return
            problem = _invalid(request)
            if problem:
                with contextlib.suppress(OSError):
                    conn.sendall(
                        json.dumps({"fd": 2, "data": f"nodeload: session: {problem}\n"}).encode() + b"\n"
                    )
                    conn.sendall(b'{"exit": 2}\n')
                return
            # From here on the push is the session's: the caller must not run it again itself.
            with contextlib.suppress(OSError):
                conn.sendall(b'{"accepted": true}\n')
            thread = threading.get_ident()
            self.library.forgive(thread)
            caller = _Caller(conn, lambda: self.library.interrupt(thread), self.send_seconds)
            caller.start()
            code = self._run(caller, request)
            caller.done()
            caller.send({"exit": code})
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # also ends the watcher's wait

    def _run(self, caller: _Caller, request: dict[str, Any]) -> int:
        """One command line, as the caller would have run it, in its directory and environment."""
        terminal = bool(request.get("terminal"))
        out, err = _Output(caller, 1, False), _Output(caller, 2, terminal)
        columns = str(request["env"].get("COLUMNS", ""))
        self._stdout.use(out)
        self._stderr.use(err)
        try:
            with self._admission.admitted(request, caller, err.write) as admitted:
                if not admitted:
                    return 130
                # Said while admitted: the log's order of starts and ends is the order of the pushes.
                _log(f"push {' '.join(request['argv'][1:])[:200]!r} started")
                started = time.monotonic()
                code = self._command(request, err, columns)
                _log(f"push ended ({code}) after {time.monotonic() - started:.3f} s")
        finally:
            self._stdout.use(None)
            self._stderr.use(None)
        return code

    def _command(self, request: dict[str, Any], err: _Output, columns: str) -> int:
        """The command line's exit status, whatever way it ended."""
        from nodeload.cli import run_in_session

        self.idle = float(request["persist"])
        try:
            return run_in_session(
                request["argv"],
                request.get("kubectl") is True,
                self.library,
                stderr=cast(TextIO, err),  # a text stream, as the command line needs
                columns=int(columns) if columns.isdigit() else None,
            )
        except KeyboardInterrupt:
            return 130
        except SystemExit as done:  # argparse's own exit (a usage error)
            return done.code if isinstance(done.code, int) else 2
        except Exception as error:  # one push's failure is not the session's
            print(f"nodeload: error: {type(error).__name__}: {error}", file=sys.stderr)
            return 1


def _log(text: str) -> None:
    """A line of the session's log (with the time: the log tells what ran when)."""
    thread = threading.current_thread().name
    print(f"{time.strftime('%H:%M:%S')} [{thread}] {text}", file=sys.__stderr__, flush=True)


def _library_session() -> LibrarySession:
    """The session the pushes run in: its loop and the nodes' connections, kept between pushes."""
    from nodeload.session import Session as LibrarySession

    return LibrarySession(keep_connections=True, shared=True)


def _invalid(request: dict[str, Any]) -> str | None:
    """Why ``request`` is not a push this session runs, or None."""
    argv, env, persist = request.get("argv"), request.get("env"), request.get("persist")
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(a, str) for a in argv)
        or argv[0] != "push"
    ):
        return "only pushes are handed to a session"
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return "a malformed environment"
    if not isinstance(persist, int | float) or not 0 < persist <= 86400:
        return "a malformed duration"
    return None


def _reset_logging() -> None:
    """Undo what a push's --debug set up (its handler wrote to that push's caller)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _same_user(conn: socket.socket) -> bool:
    """Whether the caller runs as this process's user (the socket's mode already says so)."""
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return bool(uid == os.getuid())


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("the caller went away")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("request too large")
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("not a request")
    return request


def main() -> None:
    """``python -m nodeload.persist.server FD DIR NAME``."""
    fd, directory, name = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{started} nodeload persistent session on {directory / name}.sock (pid {os.getpid()})", flush=True)
    with SessionDir.adopt(fd, directory) as where, contextlib.suppress(KeyboardInterrupt):
        Server(where, name).serve()  # KeyboardInterrupt: SIGTERM, or stopped mid-accept
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} session ended", flush=True)


if __name__ == "__main__":
    main()
