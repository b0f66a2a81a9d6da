"""Temporary files and directories tagged with the process that owns them.

A run killed with ``kill -9`` cannot clean up after itself. Every temporary
entry nodeload creates is named ``<prefix><pid>-<random>``, so a later run can
tell the leftovers of dead processes from the files of runs still going and
remove only the former.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from nodeload.userdirs import untrusted

# Whatever its owner, an entry this old is a leftover (a pid may have been reused since).
_MAX_AGE_SECONDS = 24 * 3600
# What runs leave in the temporary directory: tunnels' sockets, serve's spool and its client logins.
TEMP_PREFIXES = ("nodeload-", "nodeload-serve-", "nodeload-serve-auth-")


def temp_root() -> str:
    """The temporary directory (``$TMPDIR``...), unless another user could redirect what is made
    in it (root with someone's environment, ``sudo -E``): then ``/tmp``. A tunnel's socket made
    there would otherwise be theirs to move."""
    root = tempfile.gettempdir()
    return root if untrusted(root) is None else "/tmp"


def mkdtemp(prefix: str, directory: str | Path | None = None) -> str:
    """A new private (0700) directory ``<prefix><pid>-<random>`` (default: in :func:`temp_root`)."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=directory or temp_root())


def sweep_temp() -> list[Path]:
    """Remove what dead runs left in the temporary directory (see :data:`TEMP_PREFIXES`)."""
    return [path for prefix in TEMP_PREFIXES for path in sweep(temp_root(), prefix)]


def mkstemp(prefix: str, directory: str | Path, suffix: str = "") -> tuple[int, str]:
    """A new private (0600) file ``<prefix><pid>-<random><suffix>``, open for writing."""
    return tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", dir=directory, suffix=suffix)


def sweep(directory: str | Path, prefix: str) -> list[Path]:
    """Remove the entries of dead processes (or older than a day) from ``directory``.

    Only entries owned by this user are considered. Returns what was removed.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if not match:
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if info.st_uid != os.getuid():
                continue
            if _alive(int(match.group(1))) and time.time() - info.st_mtime < _MAX_AGE_SECONDS:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
