"""Opening files inside a directory without ever leaving it.

An OCI layout is a directory tree the user may have received from anyone. Its
files are opened one path component at a time relative to the layout's own
directory, refusing symlinks (``O_NOFOLLOW``) and anything that is not a regular
file (``fstat``): a link to ``/dev/zero``, a FIFO or a file outside the layout
is an error, not something to read (or stream to a node).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from nodeload.errors import SourceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_confined(root: Path, name: str) -> int:
    """A file descriptor for the regular file ``root/name``; the caller closes it.

    ``root`` itself may be a symlink (the user chose it); nothing below it may be.

    Raises:
        SourceError: when the file is missing, is a symlink or not a regular file,
            or ``name`` tries to leave ``root``.
    """
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"{root / name}: not a plain path inside the layout")
    shown = root / name
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"{root}: {exc.strerror or 'cannot open'}") from exc
    for i, part in enumerate(parts):
        fd = _step(fd, part, _FILE_FLAGS if i == len(parts) - 1 else _DIR_FLAGS, shown)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceError(f"{shown} is not a regular file; nodeload reads only regular files in a layout")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(dir_fd: int, part: str, flags: int, shown: Path) -> int:
    """Open ``part`` relative to ``dir_fd``; ``dir_fd`` is closed whatever happens."""
    try:
        return os.open(part, flags, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP: the component is a symlink; ENOTDIR: a symlink (or file) where a directory belongs.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) or (
            exc.errno == errno.ENOENT and _is_symlink(dir_fd, part)
        ):
            raise SourceError(
                f"{shown}: {part!r} is a symlink or not a directory; nodeload does not follow links "
                "inside a layout"
            ) from exc
        raise SourceError(f"{shown}: {exc.strerror or 'cannot open'}") from exc
    finally:
        os.close(dir_fd)


def _is_symlink(dir_fd: int, part: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
