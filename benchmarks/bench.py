"""nodeload vs `docker save | ssh node ctr -n k8s.io images import -`, side by side.

Sections (all by default; ``--only SECTION`` picks some): ``pushes``, ``fanout``, ``fallback``.

pushes:
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

fanout: see benchmarks/fanout.py.

    python -m benchmarks.bench [--size-mib 250] [--changed-mib 5] [--rate-mbit 100] [--runs 3]
                               [--fanout-mbit 200] [--only pushes,fanout] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import MiB, bench_env, nodeload_argv, print_checks, print_table, timed
from benchmarks.fallback import HEADERS as FALLBACK_HEADERS
from benchmarks.fallback import fallback, fallback_rows
from benchmarks.fanout import HEADERS as FANOUT_HEADERS
from benchmarks.fanout import fanout, fanout_checks, fanout_rows
from nodeload.report import human_bytes
from nodeload.sandbox import LayerSpec, Sandbox, build_image, docker_client, sweep_leftovers

IMAGE = "nodeload-bench/app"
SECTIONS = ("pushes", "fanout", "fallback")
SCENARIOS = (("cold", "v1"), ("warm", "v2"), ("repeat", "v2"))
BASELINE, DAEMON, LAYOUT = "save|import", "nodeload docker-daemon:", "nodeload oci:"


@dataclass
class Run:
    """One measured push."""

    seconds: float
    wire_bytes: int
    peak_rss: int = 0  # bytes; nodeload only
    reported_bytes: int | None = None  # nodeload's own bytes_sent


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
        return self._measured("node-1", lambda: Run(timed(["bash", "-o", "pipefail", "-c", cmd]).seconds, 0))

    def nodeload(self, alias: str, image: str) -> Run:
        """``nodeload push``, exactly as a user runs it."""
        argv = nodeload_argv("push", image, "--node", alias)
        argv += ["-F", str(self.sandbox.ssh_config_path), "--json", "--name", f"{IMAGE}:bench"]

        def push() -> Run:
            run = timed(argv, env=bench_env(self.cache))
            return Run(run.seconds, 0, run.peak_rss, int(json.loads(run.stdout)["nodes"][0]["bytes_sent"]))

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
    parser.add_argument("--fanout-mbit", type=float, default=200, help="fan-out link rate (default 200)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run ({', '.join(SECTIONS)})")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--only: unknown section in {args.only!r}; choose from {', '.join(SECTIONS)}")

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
    if "pushes" in sections:
        _pushes(client, args, console)
    if "fanout" in sections:
        runs = fanout(client, f"{IMAGE}:v1", args.fanout_mbit, console)
        title = f"Fan-out: {args.size_mib} MiB image, cold, each node behind {args.fanout_mbit:g} Mbit/s"
        print_table(title, FANOUT_HEADERS, fanout_rows(runs), args.markdown)
        print_checks(fanout_checks(runs))
    if "fallback" in sections:
        runs = fallback(client, IMAGE, console)
        title = f"ctr-import fallback: {args.size_mib} MiB image, {args.changed_mib} MiB changed, loopback"
        print_table(title, FALLBACK_HEADERS, fallback_rows(runs), args.markdown)
    return 0


def _pushes(client: Any, args: argparse.Namespace, console: Console) -> None:
    """Cold, warm and repeat pushes by every contender; medians of ``args.runs`` runs."""
    save_seconds = timed(["bash", "-c", f"docker save {IMAGE}:v2 > /dev/null"]).seconds
    runs: list[dict[str, dict[str, Run]]] = []
    for attempt in range(1, args.runs + 1):
        console.print(f"run {attempt}/{args.runs}: three fresh nodes")
        runs.append(_one_run(client, args.rate_mbit, console))
    results = _median(runs)
    link = f"{args.rate_mbit:g} Mbit/s" if args.rate_mbit else "loopback, unshaped"
    title = f"{args.size_mib} MiB image, {args.changed_mib} MiB changed layer, {link}"
    title += f", median of {args.runs} runs" if args.runs > 1 else ", one run"
    print_table(title, HEADERS, _rows(results), args.markdown)
    _checks(results, args.changed_mib)
    floor = "the floor of a changed push from the Docker engine"
    print(f"docker save of {IMAGE}:v2 alone ({floor}): {save_seconds:.2f} s")


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
    print_checks(checks)


if __name__ == "__main__":
    sys.exit(main())
