"""Peak memory of a command, measured so that the measuring process does not inflate it.

Linux carries a process's peak RSS across ``exec``, and a child starts with its
parent's pages: a command started straight from a big process (a pytest worker that
has just built a 500 MB test file) reports that process's size as its own peak. The
command is therefore started from a small launcher process, whose ``wait4`` sees the
command's own peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

_LAUNCHER = """
import json, os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss, "cpu": cpu}, f)
"""


@dataclass(frozen=True)
class Measured:
    """How a command ended, the most memory it held at once, and the CPU time it used."""

    code: int
    peak_rss: int  # bytes
    cpu_seconds: float = 0.0  # user + system, its waited-for children included


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
) -> Measured:
    """Run ``argv`` to completion and report its exit code and peak RSS."""
    with tempfile.NamedTemporaryFile(prefix="nodeload-rss-", suffix=".json") as out:
        subprocess.run(
            [sys.executable, "-c", _LAUNCHER, out.name, *argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            check=False,
        )
        result = json.loads(out.read() or b'{"code": -1, "maxrss_kib": 0}')
    return Measured(
        code=int(result["code"]),
        peak_rss=int(result["maxrss_kib"]) * 1024,
        cpu_seconds=float(result.get("cpu", 0.0)),
    )
