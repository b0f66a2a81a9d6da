"""nodeload vs `docker save | ssh node ctr -n k8s.io images import -`, side by side, in one run.

Sections (all by default; ``--only SECTION`` picks some): ``pushes``, ``speed``, ``docker``,
``seeds``, ``fanout``, ``fallback``; then the ratios of issue #9 against their targets, from the
same run.

pushes:
Six fresh sandbox nodes, one per contender, so none benefits from another:

- save|import: the usual pipeline, from the local Docker engine;
- nodeload, from the Docker engine (`nodeload push IMG`: --export auto, the engine's own
  docker push into the nodes), with an empty cache at the start;
- the same with `--export save` (docker save, nodeload's compression, pipelined);
- nodeload, from an OCI layout (`nodeload push oci:DIR:TAG`), as written by
  `docker buildx build --output type=oci` (here by skopeo, before the clock starts);
- nodeload, from a local containerd (`nodeload push containerd:REF`), as nerdctl or BuildKit
  leave images (imported with ctr before the clock starts);
- nodeload from the Docker engine typed at a terminal (standard error a pseudo-terminal, no
  flag): the default keeps a persistent session, so the cold push starts it (and pays for it)
  and the warm and repeat pushes are handed to it. ``ssh node true`` beside the repeat push.

Three pushes each: cold (empty node), warm (the same image with one changed top
layer), repeat (the same image again); the whole sequence is repeated on fresh
nodes (--runs) and each cell is the median run. Bytes on the wire are the node's eth0 rx
counter; nodeload's peak memory is the child process's max RSS (wait4).

speed, docker, seeds, fanout, fallback: see benchmarks/speed.py, docker_side.py, seeds.py,
fanout.py, fallback.py.

    python -m benchmarks.bench [--size-mib 250] [--changed-mib 5] [--rate-mbit 100] [--runs 3]
                               [--fanout-mbit 200] [--only pushes,speed] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import (
    MiB,
    bench_env,
    compile_nodeload,
    local_containerd,
    nodeload_argv,
    print_checks,
    print_table,
    timed,
)
from benchmarks.docker_side import HEADERS as SIDE_HEADERS
from benchmarks.docker_side import docker_side, docker_side_rows
from benchmarks.fallback import HEADERS as FALLBACK_HEADERS
from benchmarks.fallback import fallback, fallback_rows
from benchmarks.fanout import HEADERS as FANOUT_HEADERS
from benchmarks.fanout import fanout, fanout_checks, fanout_rows
from benchmarks.seeds import HEADERS as SEEDS_HEADERS
from benchmarks.seeds import clear_stale_uplink, seeds, seeds_rows
from benchmarks.speed import MEMORY_IMAGES, Speed, speed
from nodeload.report import human_bytes
from nodeload.sandbox import LayerSpec, Sandbox, build_image, docker_client, sweep_leftovers

IMAGE = "nodeload-bench/app"
STORED = f"docker.io/{IMAGE}"  # its name in the local containerd
SECTIONS = ("pushes", "speed", "docker", "seeds", "fanout", "fallback")
SCENARIOS = (("cold", "v1"), ("warm", "v2"), ("repeat", "v2"))
BASELINE, DAEMON, DAEMON_SAVE = (
    "save|import",
    "nodeload docker-daemon:",
    "nodeload docker-daemon: --export save",
)
LAYOUT, CONTAINERD = "nodeload oci:", "nodeload containerd:"
TERMINAL = "nodeload docker-daemon: at a terminal"
SSH_TRUE = "ssh node true"


@dataclass
class Run:
    """One measured push."""

    seconds: float
    wire_bytes: int
    peak_rss: int = 0  # bytes; nodeload only
    reported_bytes: int | None = None  # nodeload's own bytes_sent
    machine_cpu: float = 0.0  # CPU seconds of every process on the machine meanwhile


class Bench:
    """The sandbox, the images and the five contenders."""

    def __init__(self, sandbox: Sandbox, layouts: Path, caches: Path, containerd: Path) -> None:
        """Contenders use node-1 to node-6, each nodeload contender a layer cache of its own."""
        self.sandbox, self.layouts, self.caches, self.containerd = sandbox, layouts, caches, containerd
        # The persistent session of the terminal contender: a directory of its own (short, for
        # the socket path), so that no other session is used.
        self.runtime = Path(tempfile.mkdtemp(prefix="nl-bench-"))

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

        def pipeline() -> Run:
            run = timed(["bash", "-o", "pipefail", "-c", cmd])
            return Run(run.seconds, 0, machine_cpu=run.machine_cpu)

        return self._measured("node-1", pipeline)

    def nodeload(self, alias: str, image: str, *args: str, terminal: bool = False) -> Run:
        """``nodeload push``, exactly as a user runs it (typed at a terminal, with ``terminal``)."""
        argv = nodeload_argv("push", image, "--node", alias, *args)
        argv += ["-F", str(self.sandbox.ssh_config_path), "--json", "--name", f"{IMAGE}:bench"]

        def push() -> Run:
            run = timed(argv, env=self.env(alias), terminal=terminal)
            sent = int(json.loads(run.stdout)["nodes"][0]["bytes_sent"])
            # At a terminal the work is the session's: this process's RSS would say nothing.
            return Run(run.seconds, 0, 0 if terminal else run.peak_rss, sent, run.machine_cpu)

        return self._measured(alias, push)

    def ssh_true(self, alias: str) -> Run:
        """``ssh node true``: the floor of anything done on the node over SSH (median of 5)."""
        argv = ["ssh", "-F", str(self.sandbox.ssh_config_path), alias, "true"]
        runs = sorted((timed(argv) for _ in range(5)), key=lambda r: r.seconds)
        return Run(runs[2].seconds, 0, machine_cpu=runs[2].machine_cpu)

    def env(self, alias: str) -> dict[str, str]:
        """A contender's environment: its own layer cache, and its own session directory."""
        return {**bench_env(str(self.caches / alias)), "XDG_RUNTIME_DIR": str(self.runtime)}

    def close(self) -> None:
        """End the terminal contender's session."""
        subprocess.run(
            nodeload_argv("persist", "stop"), env=self.env("node-6"), capture_output=True, check=False
        )
        shutil.rmtree(self.runtime, ignore_errors=True)

    def run(self, tag: str) -> dict[str, Run]:
        """One scenario for every contender."""
        return {
            BASELINE: self.baseline(tag),
            DAEMON: self.nodeload("node-2", f"{IMAGE}:{tag}"),
            DAEMON_SAVE: self.nodeload("node-3", f"{IMAGE}:{tag}", "--export", "save"),
            LAYOUT: self.nodeload("node-4", f"oci:{self.layouts / tag}:{tag}"),
            CONTAINERD: self.nodeload(
                "node-5", f"containerd:{STORED}:{tag}", "--source-socket", str(self.containerd)
            ),
            TERMINAL: self.nodeload("node-6", f"{IMAGE}:{tag}", terminal=True),
        }


def _export_layouts(directory: Path, containerd: Path) -> None:
    """What `docker buildx build --output type=oci` would have written, and what nerdctl or
    BuildKit leave in their containerd (not timed)."""
    for _, tag in SCENARIOS[:2]:
        dest = f"oci:{directory / tag}:{tag}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-compress", f"docker-daemon:{IMAGE}:{tag}", dest],
            check=True,
        )
        archive = directory / f"{tag}.tar"
        subprocess.run(["tar", "-C", str(directory / tag), "-cf", str(archive), "."], check=True)
        ctr = ["ctr", "--address", str(containerd), "-n", "default", "images", "import", "--no-unpack"]
        subprocess.run([*ctr, "--base-name", STORED, str(archive)], check=True, capture_output=True)


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
    parser.add_argument(
        "--uplink-mbit", type=float, default=100, help="seeds: the shared uplink (default 100)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run ({', '.join(SECTIONS)})")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--only: unknown section in {args.only!r}; choose from {', '.join(SECTIONS)}")

    console = Console(stderr=True)
    compile_nodeload()
    client = docker_client()
    sweep_leftovers(client)
    clear_stale_uplink(console)
    base = args.size_mib - args.changed_mib - 1  # ~1 MiB of busybox
    parts = [LayerSpec(base * MiB // 4, f"base-{i}") for i in range(4)]
    console.print(
        f"building {IMAGE}:v1/v2 (~{args.size_mib} MiB; the {args.changed_mib} MiB top layer changes)"
    )
    for tag in ("v1", "v2"):
        build_image(client, f"{IMAGE}:{tag}", tag, [*parts, LayerSpec(args.changed_mib * MiB, f"top-{tag}")])
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work, local_containerd() as containerd:
        layouts = Path(work)
        _export_layouts(layouts, containerd)
        results = _pushes(client, args, console, layouts, containerd) if "pushes" in sections else None
        measured = speed(layouts / "v1", "v1", args.runs, console, client) if "speed" in sections else None
        if "seeds" in sections:
            seed_runs = seeds(client, layouts / "v1", "v1", args.uplink_mbit, console)
            uplink = f"behind one {args.uplink_mbit:g} Mbit/s uplink"
            title = f"One upload for the cluster: {args.size_mib} MiB image to 4 nodes {uplink}"
            print_table(title, SEEDS_HEADERS, seeds_rows(seed_runs), args.markdown)
        if "docker" in sections:
            side = docker_side(client, IMAGE, layouts, console)
            title = (
                f"The Docker side: {args.size_mib} MiB image, {args.changed_mib} MiB changed layer, loopback"
            )
            print_table(title, SIDE_HEADERS, docker_side_rows(side), args.markdown)
    if results or measured:
        _ratios(results, measured, args.markdown)
    if "fanout" in sections:
        runs = fanout(client, f"{IMAGE}:v1", args.fanout_mbit, console)
        title = f"Fan-out: {args.size_mib} MiB image, cold, each node behind {args.fanout_mbit:g} Mbit/s"
        print_table(title, FANOUT_HEADERS, fanout_rows(runs), args.markdown)
        print_checks(fanout_checks(runs))
    if "fallback" in sections:
        fallback_runs = fallback(client, IMAGE, console)
        title = f"ctr-import fallback: {args.size_mib} MiB image, {args.changed_mib} MiB changed, loopback"
        print_table(title, FALLBACK_HEADERS, fallback_rows(fallback_runs), args.markdown)
    return 0


def _pushes(
    client: Any, args: argparse.Namespace, console: Console, layouts: Path, containerd: Path
) -> dict[str, dict[str, Run]]:
    """Cold, warm and repeat pushes by every contender; medians of ``args.runs`` runs."""
    save_seconds = timed(["bash", "-c", f"docker save {IMAGE}:v2 > /dev/null"]).seconds
    runs: list[dict[str, dict[str, Run]]] = []
    for attempt in range(1, args.runs + 1):
        console.print(f"run {attempt}/{args.runs}: six fresh nodes")
        runs.append(_one_run(client, args.rate_mbit, console, layouts, containerd))
    results = _median(runs)
    link = f"{args.rate_mbit:g} Mbit/s" if args.rate_mbit else "loopback, unshaped"
    title = f"{args.size_mib} MiB image, {args.changed_mib} MiB changed layer, {link}"
    title += f", median of {args.runs} runs" if args.runs > 1 else ", one run"
    print_table(title, HEADERS, _rows(results), args.markdown)
    _checks(results, args.changed_mib)
    floor = "the floor of a changed push from the Docker engine"
    print(f"docker save of {IMAGE}:v2 alone ({floor}): {save_seconds:.2f} s")
    return results


def _one_run(
    client: Any, rate_mbit: float | None, console: Console, layouts: Path, containerd: Path
) -> dict[str, dict[str, Run]]:
    """Every scenario for every contender, on fresh nodes and empty layer caches."""
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory() as caches, Sandbox(nodes=6, client=client) as sandbox:
        if rate_mbit:
            for node in sandbox.nodes:
                node.shape(rate_mbit)
        bench = Bench(sandbox, layouts, Path(caches), containerd)
        try:
            for scenario, tag in SCENARIOS:
                console.print(f"  {scenario} push of {IMAGE}:{tag} ...")
                results[scenario] = bench.run(tag)
            results["repeat"][SSH_TRUE] = bench.ssh_true("node-6")
        finally:
            bench.close()
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


HEADERS = (
    "push",
    "tool",
    "time",
    "speed vs save|import",
    "bytes on the wire",
    "bytes_sent",
    "peak RSS",
    "machine CPU",
)


def _rows(results: dict[str, dict[str, Run]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
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
                    f"{run.machine_cpu:.1f} s",
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
        for tool in (DAEMON, LAYOUT, CONTAINERD, TERMINAL)
    ]
    checks += [
        (f"{tool}: warm wire bytes <= 1.05 x changed layer + 64 KiB", warm[tool].wire_bytes <= budget)
        for tool in (DAEMON, DAEMON_SAVE, LAYOUT, CONTAINERD, TERMINAL)
    ]
    checks.append(("nodeload peak memory < 200 MB", peak < 200e6))
    print_checks(checks)


RATIO_HEADERS = ("measure", "nodeload", "reference", "ratio", "target", "")


@dataclass(frozen=True)
class Ratio:
    """One of the issue's ratios: nodeload's time over a reference's, or with ``faster`` the
    reference's over nodeload's (a speed-up, or nodeload's share of the reference's throughput)."""

    what: str
    ours: float
    reference_name: str
    reference: float
    limit: float
    faster: bool = False  # the target is a speed-up (reference / ours >= limit)

    @property
    def value(self) -> float:
        return self.reference / self.ours if self.faster else self.ours / self.reference

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.faster else self.value <= self.limit

    def row(self) -> tuple[str, ...]:
        target = f">= {self.limit:g}" if self.faster else f"<= {self.limit:g}"
        reference = f"{self.reference_name} {self.reference:.2f} s"
        verdict = "PASS" if self.met else "MISS"
        return (self.what, f"{self.ours:.2f} s", reference, f"{self.value:.2f}", target, verdict)


def _ratios(results: dict[str, dict[str, Run]] | None, measured: Speed | None, markdown: bool) -> None:
    """Issue #9's ratios, from this run, against their targets."""
    ratios: list[Ratio] = []
    if measured:
        # Throughput is the inverse of time: nodeload's share of raw ssh's throughput, >= 0.8.
        raw, cold_push = measured.raw_seconds, measured.cold_seconds
        ratios.append(Ratio("throughput: cold --no-unpack", cold_push, "cat | ssh 'cat >'", raw, 0.8, True))
        ratios.append(
            Ratio("  bound: containerd's own ingest", measured.ingest_seconds, "cat | ssh", raw, 0.8, True)
        )
        ssh_true = measured.ssh_true_seconds
        ratios.append(
            Ratio("latency: repeat push, own process", measured.repeat_seconds, "ssh true", ssh_true, 1.2)
        )
        imports = measured.imports_seconds  # before nodeload has done anything at all
        ratios.append(Ratio("  bound: Python start-up + imports alone", imports, "ssh true", ssh_true, 1.2))
    if results:
        cold, warm = results["cold"], results["warm"]
        for tool in (DAEMON_SAVE, DAEMON):
            name = f"cold {tool.removeprefix('nodeload ')}"
            ratios.append(Ratio(name, cold[tool].seconds, "oci:", cold[LAYOUT].seconds, 1.1))
        base = warm[BASELINE].seconds
        ratios.append(Ratio("warm containerd:", warm[CONTAINERD].seconds, "save|import", base, 15, True))
        # Issue #24: the invocation users type, with no flag, from their terminal.
        ratios.append(
            Ratio("warm, engine, at a terminal", warm[TERMINAL].seconds, "save|import", base, 10, True)
        )
        repeat = results["repeat"]
        ssh_true = repeat[SSH_TRUE].seconds
        ratios.append(
            Ratio("repeat, engine, at a terminal", repeat[TERMINAL].seconds, "ssh true", ssh_true, 1.2)
        )
    print_table(
        "Ratios of this run, against their targets", RATIO_HEADERS, [r.row() for r in ratios], markdown
    )
    if measured:
        split = ", ".join(f"{k} {v:.3f} s" for k, v in measured.repeat_timings.items())
        print(f"repeat push, nodeload's own split: {split}")
        peak, ok = human_bytes(measured.memory_peak_rss), measured.memory_peak_rss < 200e6
        load = f"{MEMORY_IMAGES} images to {measured.memory_nodes} nodes in one run"
        print(
            f"{'PASS' if ok else 'MISS'}  memory: {load} took {measured.memory_seconds:.1f} s, all ok; "
            f"nodeload's peak RSS {peak} (target < 200 MB)"
        )


if __name__ == "__main__":
    sys.exit(main())
