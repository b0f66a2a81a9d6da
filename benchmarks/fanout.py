"""Fan-out: the same cold push to 1 node and to 4 nodes, each behind its own shaped link.

The image comes from the Docker engine (``--export save``) with an empty layer cache, so the
run also shows that the source is exported once (the engine's own ``save`` events), whatever
the number of nodes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from benchmarks.common import DockerSaves, bench_env, nodeload_argv, rx_bytes, timed
from nodeload.report import human_bytes
from nodeload.sandbox import Sandbox

HEADERS = (
    "nodes",
    "source",
    "time",
    "vs 1 node",
    "docker saves",
    "bytes on the wire (all nodes)",
    "peak RSS",
)


@dataclass
class FanoutRun:
    """One fan-out push."""

    nodes: int
    seconds: float
    saves: int
    wire_bytes: int
    peak_rss: int


def fanout(client: Any, image: str, rate_mbit: float, console: Console) -> list[FanoutRun]:
    """Push ``image`` cold to 1 and then 4 fresh nodes, each link shaped to ``rate_mbit``."""
    runs = []
    for count in (1, 4):
        console.print(f"  fan-out: {image} to {count} node(s) at {rate_mbit:g} Mbit/s each ...")
        with tempfile.TemporaryDirectory() as cache, Sandbox(nodes=count, client=client) as sandbox:
            for node in sandbox.nodes:
                node.shape(rate_mbit)
            argv = nodeload_argv(
                "push", image, "-F", str(sandbox.ssh_config_path), "--json", "--export", "save"
            )
            for alias in sandbox.aliases:
                argv += ["--node", alias]
            before = rx_bytes(sandbox, sandbox.aliases)
            with DockerSaves() as saves:
                run = timed(argv, env=bench_env(cache))
            report = json.loads(run.stdout)
            if not all(r["status"] == "ok" for r in report["nodes"]):
                raise SystemExit(f"fan-out push failed: {report}")
            wire = rx_bytes(sandbox, sandbox.aliases) - before
        runs.append(FanoutRun(count, run.seconds, saves.count, wire, run.peak_rss))
    return runs


def fanout_rows(runs: list[FanoutRun]) -> list[tuple[str, ...]]:
    """Table rows; the ratio is each run's time over the 1-node time."""
    one = runs[0].seconds
    return [
        (
            str(r.nodes),
            "docker-daemon:, empty cache",
            f"{r.seconds:.2f} s",
            f"{r.seconds / one:.2f}x",
            str(r.saves),
            human_bytes(r.wire_bytes),
            human_bytes(r.peak_rss),
        )
        for r in runs
    ]


def fanout_checks(runs: list[FanoutRun]) -> list[tuple[str, bool]]:
    """The issue's targets for fan-out."""
    one, four = runs[0], runs[-1]
    return [
        ("fan-out: 4 nodes take <= 1.5x the time of 1", four.seconds <= 1.5 * one.seconds),
        ("fan-out: one docker save whatever the number of nodes", one.saves == four.saves == 1),
    ]
