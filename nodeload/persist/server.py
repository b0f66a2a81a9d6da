"""The persistent session: a background process that runs the pushes handed to it.

``python -m nodeload.persist.server FD DIR NAME`` (started by :mod:`nodeload.cli.handover`, which hands it its
session directory open as FD). One push at a time, each exactly as the command line would run
it, in the caller's directory and environment and with its output sent back; between pushes the
nodes' SSH connections stay open in a :class:`nodeload.session.Session`. It ends after the
idle time the last push asked for (``--persist``), on ``nodeload persist stop``, or on SIGTERM,
closing every connection.

Only its own user reaches it: the socket is 0600 in a 0700 directory, and each caller's
credentials (SO_PEERCRED) are checked too. Its socket and lock are reached through the
directory's descriptor (:class:`~nodeload.cli.handover.SessionDir`), never by a path. A
caller that goes away mid-push (Ctrl-C) interrupts the push as Ctrl-C would.
"""

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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeload.cli.handover import MAX_MESSAGE, SessionDir

if TYPE_CHECKING:
    from nodeload.session import Session as LibrarySession

DEFAULT_IDLE = 600.0


class _Output(io.TextIOBase):
    """A text stream whose writes go to the caller as ``{"fd": N, "data": ...}`` lines."""

    def __init__(self, conn: socket.socket, fd: int, terminal: bool) -> None:
        self._conn, self._fd, self._terminal = conn, fd, terminal

    def write(self, text: str) -> int:
        if text:
            with contextlib.suppress(OSError):  # the caller went away: the push is being interrupted
                self._conn.sendall(json.dumps({"fd": self._fd, "data": text}).encode() + b"\n")
        return len(text)

    def isatty(self) -> bool:
        return self._terminal

    def writable(self) -> bool:
        return True


class Server:
    """The accept loop, the idle clock and the library session of one persistent session."""

    def __init__(self, where: SessionDir, name: str) -> None:
        """Serve on the socket ``NAME.sock`` of ``where`` (see :meth:`serve`)."""
        self.where = where
        self.socket = f"{name}.sock"
        self.lock = f"{name}.lock"
        self.idle = DEFAULT_IDLE
        self.library = _library_session()
        self._stopping = False

    def serve(self) -> None:
        """Accept pushes until idle for too long, stopped, or terminated."""
        # Python's own handler, even if the first caller ran with SIGINT ignored: interrupting a
        # push (its caller went away) is a SIGINT, cancelled by the event loop as Ctrl-C would.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with self._listening() as listener:
                if listener is None:
                    return  # another session already answers on this socket
                signal.signal(signal.SIGTERM, lambda *_: self._stop())
                while not self._stopping:
                    try:
                        listener.settimeout(self.idle)
                        conn, _ = listener.accept()
                    except TimeoutError:
                        break
                    except (InterruptedError, KeyboardInterrupt):
                        continue  # a stray interrupt between pushes (or SIGTERM: _stopping is set)
                    with conn:
                        self._handle(conn)
        finally:  # the socket is gone first: a push meanwhile starts a session of its own
            self.library.close()

    def _stop(self) -> None:
        """SIGTERM: end after the push in progress is interrupted (as Ctrl-C, so the event loop
        cancels it while its connections are still open), or at once between pushes."""
        self._stopping = True
        signal.raise_signal(signal.SIGINT)

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
        conn.settimeout(30)
        try:
            if not _same_user(conn):
                return
            request = _read_request(conn)
        except (OSError, ValueError):
            return
        conn.settimeout(None)
        if request.get("stop") is True:
            self._stopping = True
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
        conn.sendall(b'{"accepted": true}\n')
        self.idle = float(request["persist"])
        code = self._run(conn, request)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            conn.shutdown(socket.SHUT_RDWR)  # also ends the watcher's wait

    def _run(self, conn: socket.socket, request: dict[str, Any]) -> int:
        """One command line, as the caller would have run it, in its directory and environment."""
        from nodeload.cli import run_in_session

        terminal = bool(request.get("terminal"))
        saved_env = dict(os.environ)
        saved_out, saved_err = sys.stdout, sys.stderr
        watcher = _Watcher(conn)
        try:
            os.environ.clear()
            os.environ.update(request["env"])
            tempfile.tempdir = None  # $TMPDIR is the caller's
            os.chdir(str(request.get("cwd") or "/"))
            sys.stdout, sys.stderr = _Output(conn, 1, False), _Output(conn, 2, terminal)
            watcher.start()
            return run_in_session(request["argv"], request.get("kubectl") is True, self.library)
        except KeyboardInterrupt:
            return 130
        except SystemExit as done:  # argparse's own exit (a usage error)
            return done.code if isinstance(done.code, int) else 2
        except Exception as err:  # one push's failure is not the session's
            print(f"nodeload: error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        finally:
            watcher.done()
            self.library.tidy()
            _reset_logging()
            sys.stdout, sys.stderr = saved_out, saved_err
            os.environ.clear()
            os.environ.update(saved_env)
            tempfile.tempdir = None
            os.chdir("/")  # never hold (or depend on) a caller's directory between pushes


class _Watcher(threading.Thread):
    """Interrupts the running push (SIGINT, as Ctrl-C) when its caller goes away."""

    def __init__(self, conn: socket.socket) -> None:
        super().__init__(daemon=True)
        self._conn = conn
        self._lock = threading.Lock()
        self._finished = False

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while self._conn.recv(4096):
                pass  # callers send nothing after the request: only its end matters
        with self._lock:  # never after done(): the interrupt is the push's, or nobody's
            if not self._finished:
                print(
                    f"{time.strftime('%H:%M:%S')} caller gone: interrupting", file=sys.__stderr__, flush=True
                )
                signal.raise_signal(signal.SIGINT)

    def done(self) -> None:
        with self._lock:
            self._finished = True


def _library_session() -> LibrarySession:
    """The session the pushes run in: its loop and the nodes' connections, kept between pushes."""
    from nodeload.session import Session as LibrarySession

    return LibrarySession(keep_connections=True)


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
