"""nodeload vs `docker save | ssh node ctr -n k8s.io images import -`, side by side.

Three fresh sandbox nodes, one per contender, so none benefits from another:

- save|import: the usual pipeline, from the local Docker engine;
- nodeload, from the Docker engine (`nodeload push IMG`), starting with an empty
  layer cache;
- nodeload, from an OCI layout (`nodeload push oci:DIR:TAG`), as written by
  `docker buildx build --output type=oci` (here by skopeo, before the clock starts).

Three pushes each: cold (empty node), warm (the same image with one changed top
layer), repeat (the same image again); the whole sequence is repeated on fresh
nodes (--runs) and each cell is the median run. Bytes on the wire are the node's eth0 rx
counter; nodeload's peak memory is the child process's max RSS (wait4).

    python benchmarks/bench.py [--size-mib 250] [--changed-mib 5] [--rate-mbit 100] [--runs 3] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nodeload.report import human_bytes
from nodeload.sandbox import LayerSpec, Sandbox, build_image, docker_client, sweep_leftovers

MiB = 1024 * 1024
IMAGE = "nodeload-bench/app"
SCENARIOS = (("cold", "v1"), ("warm", "v2"), ("repeat", "v2"))
BASELINE, DAEMON, LAYOUT = "save|import", "nodeload docker-daemon:", "nodeload oci:"


@dataclass
class Run:
    """One measured push."""

    seconds: float
    wire_bytes: int
    peak_rss: int = 0  # bytes; nodeload only
    reported_bytes: int | None = None  # nodeload's own bytes_sent


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command; return wall seconds, the child's peak RSS (bytes) and its stdout."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=out, stderr=errors, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own peak RSS
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errors.seek(0)
        text, err = out.read().decode(), errors.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed ({proc.returncode}): {err}{text}")
    return seconds, usage.ru_maxrss * 1024, text


class Bench:
    """The sandbox, the images and the three contenders."""

    def __init__(self, sandbox: Sandbox, layouts: Path, cache: str) -> None:
        """Contenders use node-1, node-2 and node-3 respectively."""
        self.sandbox, self.layouts, self.cache = sandbox, layouts, cache

    def _measured(self, alias: str, push: Callable[[], Run]) -> Run:
        node = self.sandbox.node(alias)
        before = node.rx_bytes()
        run = push()
        run.wire_bytes = node.rx_bytes() - before
        return run

    def baseline(self, tag: str) -> Run:
        """The pipeline users would otherwise use."""
        ssh = f"ssh -F {self.sandbox.ssh_config_path} node-1"
        cmd = f"docker save {IMAGE}:{tag} | {ssh} ctr -n k8s.io images import -"
        return self._measured("node-1", lambda: Run(_timed(["bash", "-o", "pipefail", "-c", cmd])[0], 0))

    def nodeload(self, alias: str, image: str) -> Run:
        """``nodeload push``, exactly as a user runs it."""
        argv = [sys.executable, "-m", "nodeload", "push", image, "--node", alias]
        argv += ["-F", str(self.sandbox.ssh_config_path), "--json", "--name", f"{IMAGE}:bench"]

        def push() -> Run:
            seconds, rss, out = _timed(argv, env={**os.environ, "XDG_CACHE_HOME": self.cache})
            return Run(seconds, 0, rss, int(json.loads(out)["nodes"][0]["bytes_sent"]))

        return self._measured(alias, push)

    def run(self, tag: str) -> dict[str, Run]:
        """One scenario for every contender."""
        return {
            BASELINE: self.baseline(tag),
            DAEMON: self.nodeload("node-2", f"{IMAGE}:{tag}"),
            LAYOUT: self.nodeload("node-3", f"oci:{self.layouts / tag}:{tag}"),
        }


def _export_layouts(directory: Path) -> None:
    """What `docker buildx build --output type=oci` would have written (not timed)."""
    for _, tag in SCENARIOS[:2]:
        dest = f"oci:{directory / tag}:{tag}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-compress", f"docker-daemon:{IMAGE}:{tag}", dest],
            check=True,
        )


def main() -> int:
    """Build the images, run every scenario, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=250, help="image size (default 250)")
    parser.add_argument("--changed-mib", type=int, default=5, help="changed top layer (default 5)")
    parser.add_argument("--rate-mbit", type=float, help="shape each node's link to this rate")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    parser.add_argument(
        "--runs", type=int, default=3, help="repeat on fresh nodes; report medians (default 3)"
    )
    args = parser.parse_args()

    console = Console(stderr=True)
    client = docker_client()
    sweep_leftovers(client)
    base = args.size_mib - args.changed_mib - 1  # ~1 MiB of busybox
    parts = [LayerSpec(base * MiB // 4, f"base-{i}") for i in range(4)]
    console.print(
        f"building {IMAGE}:v1/v2 (~{args.size_mib} MiB; the {args.changed_mib} MiB top layer changes)"
    )
    for tag in ("v1", "v2"):
        build_image(client, f"{IMAGE}:{tag}", tag, [*parts, LayerSpec(args.changed_mib * MiB, f"top-{tag}")])
    save_seconds = _timed(["bash", "-c", f"docker save {IMAGE}:v2 > /dev/null"])[0]
    runs: list[dict[str, dict[str, Run]]] = []
    for attempt in range(1, args.runs + 1):
        console.print(f"run {attempt}/{args.runs}: three fresh nodes")
        runs.append(_one_run(client, args.rate_mbit, console))
    results = _median(runs)
    link = f"{args.rate_mbit:g} Mbit/s" if args.rate_mbit else "loopback, unshaped"
    title = f"{args.size_mib} MiB image, {args.changed_mib} MiB changed layer, {link}"
    title += f", median of {args.runs} runs" if args.runs > 1 else ", one run"
    rows = _rows(results)
    _print(title, rows, args.markdown)
    _checks(results, args.changed_mib)
    floor = "the floor of a changed push from the Docker engine"
    print(f"docker save of {IMAGE}:v2 alone ({floor}): {save_seconds:.2f} s")
    return 0


def _one_run(client: Any, rate_mbit: float | None, console: Console) -> dict[str, dict[str, Run]]:
    """Every scenario for every contender, on fresh nodes and an empty layer cache."""
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory() as tmp, Sandbox(nodes=3, client=client) as sandbox:
        _export_layouts(Path(tmp))
        if rate_mbit:
            for node in sandbox.nodes:
                node.shape(rate_mbit)
        bench = Bench(sandbox, Path(tmp), str(Path(tmp) / "cache"))
        for scenario, tag in SCENARIOS:
            console.print(f"  {scenario} push of {IMAGE}:{tag} ...")
            results[scenario] = bench.run(tag)
    return results


def _median(runs: list[dict[str, dict[str, Run]]]) -> dict[str, dict[str, Run]]:
    """Per scenario and tool, the run with the median time (the machine is noisy)."""
    out: dict[str, dict[str, Run]] = {}
    for scenario in runs[0]:
        out[scenario] = {}
        for tool in runs[0][scenario]:
            ordered = sorted((r[scenario][tool] for r in runs), key=lambda run: run.seconds)
            out[scenario][tool] = ordered[len(ordered) // 2]
    return out


HEADERS = ("push", "tool", "time", "speed vs save|import", "bytes on the wire", "bytes_sent", "peak RSS")


def _rows(results: dict[str, dict[str, Run]]) -> list[tuple[str, ...]]:
    rows = []
    for scenario, runs in results.items():
        base = runs[BASELINE]
        for tool, run in runs.items():
            speedup = f"{base.seconds / run.seconds:.1f}x"
            rows.append(
                (
                    scenario,
                    tool,
                    f"{run.seconds:.2f} s",
                    speedup,
                    human_bytes(run.wire_bytes),
                    "" if run.reported_bytes is None else human_bytes(run.reported_bytes),
                    human_bytes(run.peak_rss) if run.peak_rss else "",
                )
            )
    return rows


def _print(title: str, rows: list[tuple[str, ...]], markdown: bool) -> None:
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("push", "tool") else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)
    if markdown:
        print(f"\n{title}\n")
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for row in rows:
            print("| " + " | ".join(row) + " |")


def _checks(results: dict[str, dict[str, Run]], changed_mib: int) -> None:
    warm = results["warm"]
    budget = 1.05 * changed_mib * MiB + 64 * 1024
    peak = max(r.peak_rss for runs in results.values() for r in runs.values())
    checks = [
        (
            f"{tool}: warm push >= 10x faster than save|import",
            warm[BASELINE].seconds / warm[tool].seconds >= 10,
        )
        for tool in (DAEMON, LAYOUT)
    ]
    checks += [
        (f"{tool}: warm wire bytes <= 1.05 x changed layer + 64 KiB", warm[tool].wire_bytes <= budget)
        for tool in (DAEMON, LAYOUT)
    ]
    checks.append(("nodeload peak memory < 200 MB", peak < 200e6))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")


if __name__ == "__main__":
    sys.exit(main())
