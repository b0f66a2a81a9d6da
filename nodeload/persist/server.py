"""The persistent session: a background process that runs the pushes handed to it.

``python -m nodeload.persist.server SOCKET`` (started by :mod:`.client`). One push at a time,
each exactly as the command line would run it, in the caller's directory and environment and
with its output sent back; between pushes the nodes' SSH connections stay open on the session's
event loop (:mod:`.pool`). It ends after the idle time the last push asked for (``--persist``),
on ``nodeload persist stop``, or on SIGTERM, closing every connection.

Only its own user reaches it: the socket is 0600 in a 0700 directory, and each caller's
credentials (SO_PEERCRED) are checked too. A caller that goes away mid-push (Ctrl-C) interrupts
the push as Ctrl-C would.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nodeload.persist.client import MAX_MESSAGE
from nodeload.persist.pool import SessionPool, activate

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


class Session:
    """The accept loop, the idle clock and the pool of one session."""

    def __init__(self, path: Path) -> None:
        """Serve on ``path`` (see :meth:`serve`)."""
        self.path = path
        self.idle = DEFAULT_IDLE
        self.pool = SessionPool()
        self._stopping = False

    def serve(self) -> None:
        """Accept pushes until idle for too long, stopped, or terminated."""
        with self._listening() as listener:
            if listener is None:
                return  # another session already answers on this socket
            activate(self.pool)
            signal.signal(signal.SIGTERM, lambda *_: self._stop())
            try:
                while not self._stopping:
                    listener.settimeout(self.idle)
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        break
                    except InterruptedError:
                        continue
                    with conn:
                        self._handle(conn)
            finally:
                activate(None)
                self.pool.close()

    def _stop(self) -> None:
        self._stopping = True
        raise KeyboardInterrupt  # leaves a blocking accept (or a push, as Ctrl-C would)

    @contextlib.contextmanager
    def _listening(self) -> Iterator[socket.socket | None]:
        """The bound socket; None when a running session already owns the path. Starting
        sessions take a lock, so that two pushes starting one at once get the same."""
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(self.path))
                yield None
                return
            except OSError:
                pass
            finally:
                probe.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # left by a session that was killed
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                listener.bind(str(self.path))
            finally:
                os.umask(old)
            listener.listen(8)
            fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            yield listener
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        if not _same_user(conn):
            return
        try:
            request = _read_request(conn)
        except (OSError, ValueError):
            return
        conn.settimeout(None)
        if request.get("stop"):
            self._stopping = True
            conn.sendall(b'{"exit": 0}\n')
            return
        self.idle = float(request.get("persist") or self.idle)
        code = self._run(conn, request)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            conn.shutdown(socket.SHUT_RDWR)  # also ends the watcher's wait

    def _run(self, conn: socket.socket, request: dict[str, Any]) -> int:
        """One command line, as the caller would have run it, in its directory and environment."""
        from nodeload.cli import run_in_session

        terminal = bool(request.get("terminal"))
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        saved_out, saved_err = sys.stdout, sys.stderr
        watcher = _Watcher(conn)
        try:
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in dict(request.get("env") or {}).items()})
            os.chdir(str(request.get("cwd") or "/"))
            sys.stdout, sys.stderr = _Output(conn, 1, False), _Output(conn, 2, terminal)
            watcher.start()
            return run_in_session([str(a) for a in request.get("argv") or []], bool(request.get("kubectl")))
        except KeyboardInterrupt:
            if self._stopping:
                raise
            return 130
        except OSError as err:
            print(f"nodeload: error: {err}", file=sys.stderr)
            return 1
        finally:
            watcher.done()
            self.pool.tidy()
            sys.stdout, sys.stderr = saved_out, saved_err
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)


class _Watcher(threading.Thread):
    """Interrupts the running push (SIGINT, as Ctrl-C) when its caller goes away."""

    def __init__(self, conn: socket.socket) -> None:
        super().__init__(daemon=True)
        self._conn = conn
        self._finished = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while self._conn.recv(4096):
                pass  # callers send nothing after the request: only its end matters
        if not self._finished.is_set():
            print(f"{time.strftime('%H:%M:%S')} caller gone: interrupting", file=sys.__stderr__, flush=True)
            os.kill(os.getpid(), signal.SIGINT)

    def done(self) -> None:
        self._finished.set()


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
    """``python -m nodeload.persist.server SOCKET``."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{started} nodeload persistent session on {sys.argv[1]} (pid {os.getpid()})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGTERM, or stopped mid-accept
        Session(Path(sys.argv[1])).serve()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} session ended", flush=True)


if __name__ == "__main__":
    main()
