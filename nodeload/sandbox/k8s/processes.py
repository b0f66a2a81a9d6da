"""The control plane's processes on this machine: started detached, stopped by PID.

A PID alone could name another process once the one started here has exited, so each is
recorded with its start time (``/proc/PID/stat``) and only signalled while both still match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HostProcess:
    """One process this sandbox started: its name, PID, start time and log file."""

    name: str
    pid: int
    start_time: int
    log: str
    # Set in the process that started it, which reaps it (no zombie left in a long-lived process).
    popen: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    def alive(self) -> bool:
        """Whether the process started here is still running (not merely its PID)."""
        return _start_time(self.pid) == self.start_time

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the process's output; when a Go program died with a stack dump (klog's
        ``F`` lines, a panic), the line that says why comes first."""
        try:
            text = Path(self.log).read_text(errors="replace")
        except OSError:
            return ""
        why = next(
            (
                line
                for line in text.splitlines()
                if line.startswith(("F", "panic:", "fatal error:")) and len(line) > 6
            ),
            None,
        )
        tail = text[-chars:]
        return f"{why}\n...\n{tail}" if why and why not in tail else tail

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values (for the cluster's state file)."""
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": self.log}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostProcess:
        """The record :meth:`to_json` wrote."""
        return cls(str(data["name"]), int(data["pid"]), int(data["start_time"]), str(data["log"]))


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> HostProcess:
    """Start ``argv`` in a session of its own (it outlives a command line that started it), its
    output appended to ``log``.

    Raises:
        OSError: the program could not be started.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    start = _start_time(proc.pid)
    return HostProcess(name, proc.pid, start if start is not None else -1, str(log), proc)


def stop(process: HostProcess, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, the process if it is still the one started."""
    if not process.alive():
        _reap(process)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process.alive() and time.monotonic() < deadline:
        _reap(process)
        time.sleep(0.1)
    if process.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        while process.alive() and time.monotonic() < deadline + 5:
            _reap(process)
            time.sleep(0.05)
    _reap(process)


def _reap(process: HostProcess) -> None:
    if process.popen is not None:
        process.popen.poll()


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when there is no such
    process (or only a zombie left of it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])
