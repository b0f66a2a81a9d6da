"""Directories for this user's own files that no other user can redirect.

Run as root with another user's environment (``sudo -E``, ``su`` without ``-``),
``$XDG_RUNTIME_DIR``, ``$XDG_CACHE_HOME`` and ``$HOME`` name that user's directories, and
whoever owns a directory can swap what is in it for links: root would then write, truncate or
delete files of their choosing. So a directory is used only if every directory on the way to
it, and every link followed, belongs to this user or to root, and none is writable by others
unless sticky (as ``/tmp``): OpenSSH's rule for the files it trusts.

Standard library only: the persistent session's client (:mod:`nodeload.cli.handover`) uses it.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_LINKS = 40  # as the kernel's ELOOP


class _Unsafe(Exception):
    """Why a path could be changed by another user."""


def unsafe(path: str | os.PathLike[str], info: os.stat_result) -> str | None:
    """Why the directory or link ``path`` with status ``info`` could be changed by another user, or None."""
    if info.st_uid not in (0, os.geteuid()):
        return f"{os.fspath(path)} belongs to {_user(info.st_uid)}"
    if stat.S_ISDIR(info.st_mode) and info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        return f"{os.fspath(path)} is writable by others (and not sticky)"
    return None


def untrusted(path: str | os.PathLike[str]) -> str | None:
    """Why another user could redirect what this user keeps in ``path``, or None when no one can.

    Every directory from ``/`` down, and every link on the way (and on the way to its target),
    is checked. ``path`` need not exist: what does not will be created by this user in a
    directory already checked. A component that is not a directory ends the check (using it
    fails with an error of its own).
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        return f"{text} is not an absolute path"
    try:
        _resolve(text, [_MAX_LINKS])
    except _Unsafe as why:
        return str(why)
    return None


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/nodeload``, unless another user could redirect it (see
    :func:`untrusted`): then this user's own ``~/.cache/nodeload``, from the password database.

    Raises:
        PermissionError: none of them is safe.
    """
    candidates = [
        ("$XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME", "")),
        ("$HOME", os.path.join(os.path.expanduser("~"), ".cache")),
        ("your account", _account_cache()),
    ]
    tried: set[Path] = set()
    problems = []
    for origin, base in candidates:
        directory = Path(base) / "nodeload"
        if not base or directory in tried:
            continue
        tried.add(directory)
        problem = untrusted(directory)
        if problem is None:
            return directory
        log.debug("not using %s (from %s) as the cache: %s", directory, origin, problem)
        problems.append(problem)
    raise PermissionError(
        f"no cache directory of yours: {'; '.join(problems)}; set XDG_CACHE_HOME to a directory of yours"
    )


def _resolve(path: str, links: list[int]) -> str | None:
    """The real path of the absolute ``path``, checked on the way; None where it stops existing."""
    current = "/"
    _check(current, os.lstat(current))
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)  # ``current`` is real: its parent is the kernel's
            continue
        step = os.path.join(current, part)
        try:
            info = os.lstat(step)
        except OSError:
            return None  # missing (created by us), or not ours to enter (using it fails anyway)
        if stat.S_ISLNK(info.st_mode):
            _check(step, info)
            links[0] -= 1
            if links[0] < 0:
                raise _Unsafe(f"{path}: too many links")
            target = _resolve(os.path.join(current, os.readlink(step)), links)
            if target is None:
                return None
            current = target
        elif stat.S_ISDIR(info.st_mode):
            _check(step, info)
            current = step
        else:
            return None
    return current


def _check(path: str, info: os.stat_result) -> None:
    problem = unsafe(path, info)
    if problem:
        raise _Unsafe(problem)


def _account_cache() -> str:
    """``~/.cache`` of this user's account (the password database), or "" (a uid without one)."""
    try:
        return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".cache")
    except KeyError:
        return ""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
