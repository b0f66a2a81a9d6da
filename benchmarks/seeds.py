"""One upload for the cluster (issue #13): 1 seed + 3 peers pulling through the cluster's mirror,
against 4 direct pushes, with every node behind one shared, shaped uplink.

The uplink is the host's side of the Docker bridge (``docker0``), shaped with ``tc tbf``: what
this machine sends to any node crosses it, while node-to-node traffic (peers pulling from the
mirror) is bridged past it, as a cluster's internal network is. The mirror is the sandbox
stand-in (``nodeload.sandbox.registry_mirror``), filled before the clock starts.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import nodeload_argv, timed
from nodeload.report import human_bytes
from nodeload.sandbox import Sandbox
from nodeload.sandbox.registry_mirror import RegistryMirror

NODES = ("node-1", "node-2", "node-3", "node-4")
NAME = "docker.io/nodeload-bench/peers:v1"
HEADERS = ("push", "time", "uplink bytes", "nodes from peers", "vs direct")


@dataclass
class SeedRun:
    """One push of the image to the four nodes."""

    mode: str
    seconds: float
    uplink: int
    from_peers: int


@contextlib.contextmanager
def shaped_uplink(rate_mbit: float) -> Iterator[None]:
    """Limit everything this machine sends to its containers to ``rate_mbit``, together."""
    tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "256kb", "latency", "100ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", "docker0", "root", *tbf], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "docker0", "root"], check=False)


def clear_stale_uplink(console: Console) -> None:
    """Remove a shaped uplink a killed run left behind: it would silently slow every section."""
    shown = subprocess.run(["tc", "qdisc", "show", "dev", "docker0"], capture_output=True, text=True)
    if shown.returncode == 0 and " tbf " in f" {shown.stdout} ":
        console.print("removing a shaped uplink left on docker0 by an earlier, killed run")
        subprocess.run(["tc", "qdisc", "del", "dev", "docker0", "root"], check=True)


def seeds(client: Any, layout: Path, tag: str, rate_mbit: float, console: Console) -> list[SeedRun]:
    """Four direct pushes, then one seed and three peers, each on fresh nodes."""
    runs = []
    for mode, extra in (("4 direct pushes", ["--seeds", "0"]), ("1 seed + 3 peers", ["--seeds", "1"])):
        console.print(f"  seeds: {mode} behind one {rate_mbit:g} Mbit/s uplink ...")
        with Sandbox(5, client=client) as sandbox:
            mirror = RegistryMirror(sandbox, "node-5").start()
            mirror.configure(NODES)
            mirror.fill(f"oci:{layout}:{tag}", NAME.removeprefix("docker.io/"))
            argv = nodeload_argv("push", f"oci:{layout}:{tag}", "--name", NAME, "--json", *extra)
            argv += ["-F", str(sandbox.ssh_config_path)]
            for alias in NODES:
                argv += ["--node", alias]
            with shaped_uplink(rate_mbit):
                run = timed(argv)
            results = json.loads(run.stdout)["nodes"]
            if not all(r["status"] == "ok" for r in results):
                raise SystemExit(f"the {mode} push failed: {results}")
            uplink = sum(r["wire_bytes_sent"] or 0 for r in results)
            peers = sum(1 for r in results if r["delivered_by"] == "peer-pull")
            runs.append(SeedRun(mode, run.seconds, uplink, peers))
    return runs


def seeds_rows(runs: list[SeedRun]) -> list[tuple[str, ...]]:
    """Table rows, each against the direct pushes."""
    direct = runs[0]
    return [
        (
            r.mode,
            f"{r.seconds:.2f} s",
            human_bytes(r.uplink),
            str(r.from_peers),
            f"{direct.seconds / r.seconds:.2f}x faster, {r.uplink / direct.uplink:.2f}x the bytes",
        )
        for r in runs
    ]
