"""The command line's side of a persistent session: find or start it, hand it a push, relay the answer.

Standard library only, so that a push handed to a session costs a bare interpreter start.
The session listens on a unix socket in a directory only this user can enter
(``$XDG_RUNTIME_DIR/nodeload-UID``, else ``$TMPDIR/nodeload-UID``), named after the Python and the
nodeload it runs, so that an upgraded nodeload starts a session of its own.

Messages are JSON lines. The request: ``{"argv", "kubectl", "cwd", "env", "persist",
"terminal"}``; the answers: ``{"fd": 1|2, "data": TEXT}`` for output, then ``{"exit": CODE}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nodeload import __version__

# A session that does not answer within this is not starting: say so rather than hang.
START_SECONDS = 20.0
MAX_MESSAGE = 16 * 1024 * 1024
_SUN_PATH = 108  # sockaddr_un's path, with its terminating NUL


class SessionError(Exception):
    """The persistent session cannot be reached or started, or went away (the message says why).

    ``accepted``: the session had taken the push, so it must not be run again here.
    """

    def __init__(self, message: str, *, accepted: bool = False) -> None:
        super().__init__(message)
        self.accepted = accepted


def session_dir() -> Path:
    """The directory of this user's sessions, created 0700 (and refused if anyone else may enter it)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    base = Path(runtime) / f"nodeload-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SessionError(f"{base} must be a directory of yours that nobody else may enter (mode 0700)")
    return base


def socket_path() -> Path:
    """The session socket for this Python and this nodeload.

    Raises:
        SessionError: the path is longer than a unix socket's may be.
    """
    here = str(Path(__file__).resolve().parents[1])
    # The interpreter itself (python and python3 in a venv are the same one) and the environment.
    python = f"{os.path.realpath(sys.executable)}\0{sys.prefix}"
    key = hashlib.sha256(f"{python}\0{here}\0{__version__}".encode()).hexdigest()[:16]
    path = session_dir() / f"session-{key}.sock"
    if len(os.fsencode(path)) >= _SUN_PATH:
        raise SessionError(f"{path} is too long for a unix socket; set XDG_RUNTIME_DIR or TMPDIR shorter")
    return path


def hand_over(argv: Sequence[str], persist: float, *, kubectl: bool = False) -> int:
    """Run ``nodeload ARGV`` in the session (started if needed); its output here; its exit status.

    Raises:
        SessionError: the session could not be started or reached.
    """
    env = dict(os.environ)
    terminal = sys.stderr.isatty()
    if terminal:  # the session's progress lines are drawn for this terminal's width
        size = os.get_terminal_size(sys.stderr.fileno())
        env.setdefault("COLUMNS", str(size.columns))
        env.setdefault("LINES", str(size.lines))
    request = {
        "argv": list(argv),
        "kubectl": kubectl,
        "cwd": os.getcwd(),
        "env": env,
        "persist": persist,
        "terminal": terminal,
    }
    with _connected(start=True) as conn:
        conn.sendall(json.dumps(request).encode() + b"\n")
        try:
            return _relay(conn)
        except KeyboardInterrupt:
            # Closing our side interrupts the push in the session as Ctrl-C would; its last words
            # (what to rerun) still come. A second Ctrl-C does not wait for them.
            try:
                conn.shutdown(socket.SHUT_WR)
                return _relay(conn)
            except (KeyboardInterrupt, SessionError, OSError):
                return 130


def stop() -> bool:
    """End the session now; whether one was running."""
    try:
        with _connected(start=False) as conn:
            conn.sendall(b'{"stop": true}\n')
            _relay(conn)
    except SessionError:
        return False
    return True


def running() -> bool:
    """Whether a session answers on the socket."""
    try:
        with _connected(start=False):
            return True
    except SessionError:
        return False


def _relay(conn: socket.socket) -> int:
    outputs = {1: sys.stdout, 2: sys.stderr}
    accepted = False
    try:
        for line in _lines(conn):
            message = json.loads(line)
            if "exit" in message:
                return int(message["exit"])
            if message.get("accepted") is True:
                accepted = True
                continue
            stream = outputs.get(message.get("fd"), sys.stderr)
            stream.write(str(message.get("data", "")))
            stream.flush()
    except (OSError, ValueError) as err:
        if isinstance(err, BrokenPipeError):
            raise  # our own output was closed (| head): not the session's doing
        raise SessionError(f"the persistent session went away: {err}", accepted=accepted) from err
    raise SessionError(
        "the persistent session ended without finishing the push (see its log)", accepted=accepted
    )


def _lines(conn: socket.socket) -> Iterator[bytes]:
    buffer = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buffer += chunk
        if len(buffer) > MAX_MESSAGE:
            raise SessionError("the persistent session sent a message too large to be one of its own")
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line)


@contextlib.contextmanager
def _connected(*, start: bool) -> Iterator[socket.socket]:
    path = socket_path()
    conn = _connect(path)
    if conn is None:
        if not start:
            raise SessionError("no persistent session is running")
        _start(path)
        deadline = time.monotonic() + START_SECONDS
        while conn is None:
            if time.monotonic() > deadline:
                raise SessionError(f"the persistent session did not start; see {path.with_suffix('.log')}")
            time.sleep(0.02)
            conn = _connect(path)
    with conn:
        yield conn


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        conn.close()
        return None
    if struct.unpack("3i", credentials)[1] != os.getuid():  # our environment goes to no one else
        conn.close()
        raise SessionError(f"{path} is served by another user")
    return conn


def _start(path: Path) -> None:
    """Start the session in the background, detached from this terminal and its process group."""
    log = path.with_suffix(".log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen(
            # -P: nothing from the current directory on sys.path; cwd "/": hold no directory.
            [sys.executable, "-P", "-m", "nodeload.persist.server", str(path)],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
