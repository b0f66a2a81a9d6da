"""What every benchmark section shares: timing a command, reading node counters, printing tables."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nodeload.sandbox import Sandbox
from nodeload.sandbox.measure import run_measured

MiB = 1024 * 1024


@dataclass
class Timed:
    """A finished command: wall time, its own peak memory, what it printed, and the CPU time the
    whole machine spent meanwhile (every process: nodeload, sshd, the nodes' containerd, dockerd)."""

    seconds: float
    peak_rss: int
    stdout: str
    machine_cpu: float = 0.0


def machine_cpu_seconds() -> float:
    """CPU time the machine has been busy since boot, all cores together (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(argv: Sequence[str], env: dict[str, str] | None = None, *, terminal: bool = False) -> Timed:
    """Run a command to completion (failing the benchmark if it fails); with ``terminal``, its
    standard error is a pseudo-terminal, as when a user types it."""
    start, cpu = time.monotonic(), machine_cpu_seconds()
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as errors,
        _stderr(terminal, errors) as err,
    ):
        measured = run_measured(argv, env=env, stdout=out, stderr=err)
        seconds, cpu = time.monotonic() - start, machine_cpu_seconds() - cpu
        out.seek(0)
        errors.seek(0)
        text, said = out.read().decode(), errors.read().decode()
    if measured.code != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({measured.code}): {said}{text}")
    return Timed(seconds, measured.peak_rss, text, cpu)


@contextlib.contextmanager
def _stderr(terminal: bool, errors: Any) -> Iterator[Any]:
    """``errors``, or a pseudo-terminal whose screen is copied into it."""
    if not terminal:
        yield errors
        return
    controller, screen = pty.openpty()

    def copy() -> None:
        with contextlib.suppress(OSError):  # EIO: the last writer closed the terminal
            while chunk := os.read(controller, 65536):
                errors.write(chunk)

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        with os.fdopen(screen, "wb", closefd=True) as stream:
            yield stream
    finally:
        reader.join(timeout=10)
        os.close(controller)


def nodeload_argv(*args: str) -> list[str]:
    """``nodeload ARGS`` as a user runs it."""
    return [sys.executable, "-m", "nodeload", *args]


def compile_nodeload() -> None:
    """Write nodeload's bytecode before anything is timed, as ``pip install`` does."""
    import compileall

    import nodeload

    compileall.compile_dir(str(Path(nodeload.__file__).parent), quiet=1)


def bench_env(cache: str) -> dict[str, str]:
    """The environment of a nodeload run with its own (initially empty) layer cache.

    Python may cache bytecode, as on a user's machine (pip compiles what it installs): a
    PYTHONDONTWRITEBYTECODE left in a CI or sandbox environment would have every run compile
    nodeload's own modules again, ~0.1 s that no user pays.
    """
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    # As a user's shell has them: whether a push keeps a session is the push's default to decide.
    for name in ("PYTHONDONTWRITEBYTECODE", "NODELOAD_PERSIST", "CI"):
        env.pop(name, None)
    return env


def empty_node(node: Any) -> None:
    """Delete every image in the node's k8s.io namespace (CRI's own records too) and check that
    containerd's GC took their content: the next push there is cold again."""
    records = node.check_output(["ctr", "-n", "k8s.io", "images", "ls", "-q"]).split()
    if records:
        node.check_output(["ctr", "-n", "k8s.io", "images", "rm", "--sync", *records])
    if node.check_output(["ctr", "-n", "k8s.io", "content", "ls", "-q"]).strip():
        raise SystemExit("the node kept content after the image was deleted: the next push is not cold")


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
        print("| " + " | ".join(map(_cell, headers)) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(map(_cell, row)) + " |")


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")  # save|import would end the markdown cell


def print_checks(checks: Sequence[tuple[str, bool]]) -> None:
    """PASS/MISS lines for the issue's targets."""
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")


_CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/ttrpc.sock"
"""


@contextlib.contextmanager
def local_containerd() -> Iterator[Path]:
    """A private containerd on this machine, as a build host's (nerdctl, BuildKit); its socket."""
    root = Path(tempfile.mkdtemp(prefix="nodeload-bench-ctd-", dir="/var/tmp"))
    (root / "config.toml").write_text(_CONTAINERD_CONFIG.format(root=root))
    with open(root / "containerd.log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml")], stdout=log, stderr=log)
    socket = root / "containerd.sock"
    try:
        for _ in range(300):
            up = subprocess.run(["ctr", "--address", str(socket), "version"], capture_output=True)
            if up.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"containerd did not start: {(root / 'containerd.log').read_text()[-2000:]}")
        yield socket
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(root, ignore_errors=True)


def median(values: Sequence[float]) -> float:
    """The middle value (the machine is noisy)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
