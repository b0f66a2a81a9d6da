"""What every benchmark section shares: timing a command, reading node counters, printing tables."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from nodeload.sandbox import Sandbox
from nodeload.sandbox.measure import run_measured

MiB = 1024 * 1024


@dataclass
class Timed:
    """A finished command: wall time, its own peak memory, what it printed."""

    seconds: float
    peak_rss: int
    stdout: str


def timed(argv: Sequence[str], env: dict[str, str] | None = None) -> Timed:
    """Run a command to completion (failing the benchmark if it fails)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        measured = run_measured(argv, env=env, stdout=out, stderr=errors)
        seconds = time.monotonic() - start
        out.seek(0)
        errors.seek(0)
        text, err = out.read().decode(), errors.read().decode()
    if measured.code != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({measured.code}): {err}{text}")
    return Timed(seconds, measured.peak_rss, text)


def nodeload_argv(*args: str) -> list[str]:
    """``nodeload ARGS`` as a user runs it."""
    return [sys.executable, "-m", "nodeload", *args]


def bench_env(cache: str) -> dict[str, str]:
    """The environment of a nodeload run with its own (initially empty) layer cache."""
    return {**os.environ, "XDG_CACHE_HOME": cache}


def rx_bytes(sandbox: Sandbox, aliases: Sequence[str]) -> int:
    """Bytes received so far by these nodes' interfaces, together."""
    return sum(sandbox.node(alias).rx_bytes() for alias in aliases)


class DockerSaves:
    """Counts the ``docker save`` exports the local engine performs (its own image events)."""

    def __enter__(self) -> DockerSaves:
        self._since = str(int(time.time()))
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1.1)  # events are stamped in whole seconds
        out = subprocess.run(
            ["docker", "events", "--filter", "type=image", "--filter", "event=save", "--since", self._since,
             "--until", str(int(time.time())), "--format", "{{.Actor.ID}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        self.count = len(out.split())


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool) -> None:
    """A rich table on the terminal, and the same as markdown for the README when asked."""
    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    Console(width=160).print(table)
    if markdown:
        print(f"\n{title}\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(map(str, row)) + " |")


def print_checks(checks: Sequence[tuple[str, bool]]) -> None:
    """PASS/MISS lines for the issue's targets."""
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
