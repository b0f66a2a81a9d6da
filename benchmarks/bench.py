"""nodeload vs `docker save | ssh node ctr -n k8s.io images import -`, side by side.

Two fresh sandbox nodes, one per tool, so neither benefits from the other.
Three pushes each: cold (empty node, empty nodeload layer cache), warm (the
same image with one changed top layer), repeat (the same image again).
Bytes on the wire are the node's eth0 rx counter; nodeload's peak memory is
the child process's max RSS.

    python benchmarks/bench.py [--size-mib 250] [--changed-mib 5] [--rate-mbit 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from nodeload.report import human_bytes
from nodeload.sandbox import LayerSpec, Sandbox, build_image, docker_client, sweep_leftovers

MiB = 1024 * 1024
IMAGE = "nodeload-bench/app"


@dataclass
class Run:
    """One measured push."""

    seconds: float
    wire_bytes: int
    peak_rss: int = 0  # bytes; nodeload only
    reported_bytes: int | None = None  # nodeload's own bytes_sent


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command; return wall seconds, peak RSS of the child (bytes), stdout."""
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


def baseline(sandbox: Sandbox, alias: str, tag: str) -> Run:
    """The tool users would otherwise use."""
    node = sandbox.node(alias)
    before = node.rx_bytes()
    cmd = f"docker save {tag} | ssh -F {sandbox.ssh_config_path} {alias} ctr -n k8s.io images import -"
    seconds, _, _ = _timed(["bash", "-o", "pipefail", "-c", cmd])
    return Run(seconds, node.rx_bytes() - before)


def nodeload(sandbox: Sandbox, alias: str, tag: str, cache: str) -> Run:
    """nodeload push, as a user runs it."""
    node = sandbox.node(alias)
    before = node.rx_bytes()
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    argv = [
        sys.executable,
        "-m",
        "nodeload",
        "push",
        tag,
        "--node",
        alias,
        "-F",
        str(sandbox.ssh_config_path),
        "--json",
    ]
    seconds, rss, out = _timed(argv, env=env)
    report = json.loads(out)["nodes"][0]
    return Run(seconds, node.rx_bytes() - before, rss, int(report["bytes_sent"]))


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=250, help="image size (default 250)")
    parser.add_argument(
        "--changed-mib", type=int, default=5, help="size of the changed top layer (default 5)"
    )
    parser.add_argument("--rate-mbit", type=float, help="shape each node's link to this rate")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args()

    console = Console(stderr=True)
    client = docker_client()
    sweep_leftovers(client)
    base = args.size_mib - args.changed_mib - 1  # ~1 MiB of busybox
    parts = [LayerSpec(base * MiB // 4, f"base-{i}") for i in range(4)]
    console.print(f"building {IMAGE}:v1/v2 (~{args.size_mib} MiB, top layer {args.changed_mib} MiB changes)")
    build_image(client, f"{IMAGE}:v1", "v1", [*parts, LayerSpec(args.changed_mib * MiB, "top-v1")])
    build_image(client, f"{IMAGE}:v2", "v2", [*parts, LayerSpec(args.changed_mib * MiB, "top-v2")])
    results: dict[str, dict[str, Run]] = {}
    with Sandbox(nodes=2, client=client) as sandbox, tempfile.TemporaryDirectory() as cache:
        if args.rate_mbit:
            for node in sandbox.nodes:
                node.shape(args.rate_mbit)
        for scenario, tag in (("cold", "v1"), ("warm (1 layer changed)", "v2"), ("repeat", "v2")):
            console.print(f"  {scenario}: save|import ...")
            save_import = baseline(sandbox, "node-1", f"{IMAGE}:{tag}")
            console.print(f"  {scenario}: nodeload ...")
            ours = nodeload(sandbox, "node-2", f"{IMAGE}:{tag}", cache)
            results[scenario] = {"save|import": save_import, "nodeload": ours}
    link = f"{args.rate_mbit:g} Mbit/s" if args.rate_mbit else "loopback (unshaped)"
    _print(results, args, link)
    if args.json:
        print(json.dumps({k: {t: vars(r) for t, r in v.items()} for k, v in results.items()}, indent=2))
    return 0


def _print(results: dict[str, dict[str, Run]], args: argparse.Namespace, link: str) -> None:
    table = Table(title=f"{args.size_mib} MiB image, {args.changed_mib} MiB changed layer, link: {link}")
    for col in (
        "push",
        "save|import time",
        "nodeload time",
        "speed-up",
        "save|import wire",
        "nodeload wire",
        "nodeload bytes_sent",
        "nodeload peak RSS",
    ):
        table.add_column(col, justify="right" if col != "push" else "left")
    for scenario, runs in results.items():
        base, ours = runs["save|import"], runs["nodeload"]
        table.add_row(
            scenario,
            f"{base.seconds:.2f}s",
            f"{ours.seconds:.2f}s",
            f"{base.seconds / ours.seconds:.1f}x",
            human_bytes(base.wire_bytes),
            human_bytes(ours.wire_bytes),
            human_bytes(ours.reported_bytes or 0),
            human_bytes(ours.peak_rss),
        )
    Console().print(table)
    warm = results["warm (1 layer changed)"]
    budget = 1.05 * args.changed_mib * MiB + 64 * 1024
    checks = [
        (
            "warm push >= 10x faster than save|import",
            warm["save|import"].seconds / warm["nodeload"].seconds >= 10,
        ),
        ("warm wire bytes <= 1.05 x changed layer + 64 KiB", warm["nodeload"].wire_bytes <= budget),
        ("peak memory < 200 MB", max(r["nodeload"].peak_rss for r in results.values()) < 200e6),
    ]
    for text, ok in checks:
        Console().print(f"{'PASS' if ok else 'MISS'}  {text}")


if __name__ == "__main__":
    sys.exit(main())
