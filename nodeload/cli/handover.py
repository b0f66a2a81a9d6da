"""The command line's side of a persistent session: find or start it, hand it a push, relay the answer.

Standard library only, so that a push handed to a session costs a bare interpreter start.
The session listens on a unix socket in a directory only this user can enter
(``nodeload-UID`` in ``$XDG_RUNTIME_DIR``, else in ``/run/user/UID``, ``$TMPDIR`` or ``/tmp``:
the first that no other user can change), named after the Python and the nodeload it runs, so
that an upgraded nodeload starts a session of its own.

Messages are JSON lines. The request: ``{"argv", "kubectl", "cwd", "env", "persist",
"terminal"}``; the answers: ``{"fd": 1|2, "data": TEXT}`` for output, then ``{"exit": CODE}``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from nodeload import __version__
from nodeload.userdirs import unsafe, untrusted

log = logging.getLogger(__name__)

# A session that does not answer within this is not starting: say so rather than hang.
START_SECONDS = 20.0
MAX_MESSAGE = 16 * 1024 * 1024
# Where a login session's runtime directory is, when $XDG_RUNTIME_DIR is not usable.
USER_RUNTIME = "/run/user/{uid}"


class SessionError(Exception):
    """The persistent session cannot be reached or started, or went away (the message says why).

    ``accepted``: the session had taken the push, so it must not be run again here.
    """

    def __init__(self, message: str, *, accepted: bool = False) -> None:
        super().__init__(message)
        self.accepted = accepted


class SessionDir:
    """This user's session directory, held open: what is in it is reached through this handle
    (``*at`` calls, never following a link), not by a path that someone could redirect.

    A unix socket cannot be bound or connected relative to a descriptor, so its address is
    ``/proc/self/fd/N/NAME``: the kernel resolves it through this very directory (wherever it
    may have been moved since), and it stays far below sun_path's 108 bytes however long the
    directory's own path is.
    """

    def __init__(self, fd: int, path: Path) -> None:
        """Take ``fd``, an open directory (see :meth:`adopt`), known to the user as ``path``."""
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls) -> SessionDir:
        """Open (and create, 0700) ``nodeload-UID`` in the runtime directory (:func:`runtime_base`).

        Raises:
            SessionError: it is not a directory of this user's that nobody else may enter.
        """
        base = runtime_base()
        name = f"nodeload-{os.getuid()}"
        path = base / name
        try:
            base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise SessionError(f"cannot keep a session in {base}: {err.strerror}") from err
        try:
            problem = unsafe(base, os.fstat(base_fd))  # what was opened is what was checked
            if problem:
                raise SessionError(f"cannot keep a session in {base}: {problem}")
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=base_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=base_fd)
        except OSError as err:
            raise SessionError(
                f"{path} must be a directory of yours that nobody else may enter (mode 0700): "
                f"{_what(name, base_fd, err)}; remove it, or set XDG_RUNTIME_DIR"
            ) from err
        finally:
            os.close(base_fd)
        return cls.adopt(fd, path)

    @classmethod
    def adopt(cls, fd: int, path: Path) -> SessionDir:
        """The open directory ``fd``, checked (and closed if refused).

        Raises:
            SessionError: it is not a directory of this user's closed to others, or /proc cannot reach it.
        """
        try:
            os.set_inheritable(fd, False)  # handed to the session, not on to what a push runs
            info = os.fstat(fd)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
                raise SessionError(
                    f"{path} must be a directory of yours that nobody else may enter (mode 0700)"
                )
            try:
                reachable = os.path.samestat(os.stat(f"/proc/self/fd/{fd}"), info)
            except OSError:
                reachable = False
            if not reachable:
                raise SessionError("persistent sessions need /proc (to reach their socket safely)")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def __enter__(self) -> SessionDir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the directory."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def address(self, name: str) -> str:
        """Where to bind or connect a unix socket ``name`` of the directory (see the class)."""
        return f"/proc/self/fd/{self.fd}/{name}"

    def open_file(self, name: str, flags: int) -> int:
        """The regular file ``name`` of the directory, created 0600 if need be. Anything else
        there under that name (a link, a FIFO) is not followed: it is replaced.

        Raises:
            OSError: it could not be opened or replaced.
        """
        flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO never hangs
        for attempt in range(2):
            try:
                fd = os.open(name, flags | (os.O_EXCL if attempt else 0), 0o600, dir_fd=self.fd)
            except OSError as err:
                if attempt or err.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                    raise
            else:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
                    return fd
                os.close(fd)
            self.remove(name)
        raise OSError(errno.EEXIST, f"{self.path / name} keeps being replaced")

    def remove(self, name: str) -> None:
        """Remove the file, socket or link ``name`` of the directory (never what a link points to)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def holds_socket(self, name: str) -> bool:
        """Whether ``name`` is a socket of this user's (not a link to one elsewhere)."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()


def _what(name: str, dir_fd: int, err: OSError) -> str:
    """What is wrong with the entry ``name`` of ``dir_fd`` that could not be opened as a directory."""
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        with contextlib.suppress(OSError):
            link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            return "it is a symbolic link" if link else "it is not a directory"
    return err.strerror or str(err)


def runtime_base() -> Path:
    """Where the session directory goes: the first of ``$XDG_RUNTIME_DIR``, ``/run/user/UID``,
    ``$TMPDIR`` and ``/tmp`` that exists and that no other user can change (run as root with
    another user's environment, ``sudo -E``, the first is theirs). Why one is passed over is
    logged (``--debug``).

    Raises:
        SessionError: none is usable.
    """
    candidates = [
        ("$XDG_RUNTIME_DIR", os.environ.get("XDG_RUNTIME_DIR", "")),
        ("your login session", USER_RUNTIME.format(uid=os.getuid())),
        ("the temporary directory", tempfile.gettempdir()),
        ("the temporary directory", "/tmp"),
    ]
    for origin, base in candidates:
        if not base:
            continue
        problem = untrusted(base)
        if problem is None and not os.path.isdir(base):
            problem = "not a directory"
        elif problem is None and not os.access(base, os.W_OK | os.X_OK, effective_ids=True):
            problem = "not writable"
        if problem is None:
            return Path(base)
        log.debug("persistent session: not in %s (%s): %s", base, origin, problem)
    raise SessionError("no directory for the session's socket; set XDG_RUNTIME_DIR to a directory of yours")


def session_dir() -> Path:
    """The directory of this user's sessions, created 0700 (and refused if anyone else may enter it).

    Raises:
        SessionError: it is not usable (the message says why).
    """
    with SessionDir.open() as where:
        return where.path


def socket_path() -> Path:
    """The session socket for this Python and this nodeload (as the user sees it; the session is
    reached through :class:`SessionDir`)."""
    return session_dir() / f"{session_name()}.sock"


def session_name() -> str:
    """``session-KEY``: the name of this Python's and this nodeload's session files (``.sock``,
    ``.log``, ``.lock``)."""
    here = str(Path(__file__).resolve().parents[1])
    # The interpreter itself (python and python3 in a venv are the same one) and the environment.
    python = f"{os.path.realpath(sys.executable)}\0{sys.prefix}"
    key = hashlib.sha256(f"{python}\0{here}\0{__version__}".encode()).hexdigest()[:16]
    return f"session-{key}"


def hand_over(
    argv: Sequence[str], persist: float, *, kubectl: bool = False, started: Callable[[], None] | None = None
) -> int:
    """Run ``nodeload ARGV`` in the session (started if needed: then ``started`` is called, before
    any of the push's output); its output here; its exit status.

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
    with _connected(start=True, started=started) as conn:
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
def _connected(*, start: bool, started: Callable[[], None] | None = None) -> Iterator[socket.socket]:
    name = session_name()
    with SessionDir.open() as where:
        conn = _connect(where, name)
        if conn is None:
            if not start:
                raise SessionError("no persistent session is running")
            _start(where, name)
            if started is not None:
                started()
            deadline = time.monotonic() + START_SECONDS
            while conn is None:
                if time.monotonic() > deadline:
                    raise SessionError(f"the persistent session did not start; see {where.path / name}.log")
                time.sleep(0.02)
                conn = _connect(where, name)
    with conn:
        yield conn


def _connect(where: SessionDir, name: str) -> socket.socket | None:
    if not where.holds_socket(f"{name}.sock"):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(where.address(f"{name}.sock"))
        credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        conn.close()
        return None
    if struct.unpack("3i", credentials)[1] != os.getuid():  # our environment goes to no one else
        conn.close()
        raise SessionError(f"{where.path / name}.sock is served by another user")
    return conn


def _start(where: SessionDir, name: str) -> None:
    """Start the session in the background, detached from this terminal and its process group.
    It is handed the directory itself (its descriptor), not a path to find it again by."""
    try:
        log_fd = where.open_file(f"{name}.log", os.O_WRONLY | os.O_APPEND)
    except OSError as err:
        raise SessionError(f"cannot write the session's log {where.path / name}.log: {err.strerror}") from err
    try:
        subprocess.Popen(
            # -P: nothing from the current directory on sys.path; cwd "/": hold no directory.
            [sys.executable, "-P", "-m", "nodeload.persist.server", str(where.fd), str(where.path), name],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
            pass_fds=(where.fd,),
        )
    finally:
        os.close(log_fd)
