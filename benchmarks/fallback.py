"""The slowest way in: a warm push to a node with no stream forwarding and no relay, through
``ctr import`` of only the missing blobs, against ``docker save | ssh | ctr import``."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from benchmarks.common import bench_env, nodeload_argv, timed
from nodeload.report import human_bytes
from nodeload.sandbox import NodeVariant, Sandbox

HEADERS = ("push", "tool", "time", "speed vs save|import", "bytes on the wire", "reach")


@dataclass
class FallbackRun:
    """One warm push."""

    tool: str
    seconds: float
    wire_bytes: int
    reach: str


def fallback(client: Any, image: str, console: Console) -> list[FallbackRun]:
    """v1 (untimed) then v2 (timed) to a ctr-only node, and the same with save|import."""
    bare = NodeVariant(stream_forwarding=False, remove=("socat", "nc"))
    runs = []
    with tempfile.TemporaryDirectory() as cache, Sandbox([NodeVariant(), bare], client=client) as sandbox:
        ssh = f"ssh -F {sandbox.ssh_config_path} node-1"
        for tag in ("v1", "v2"):
            console.print(f"  fallback: {image}:{tag} by save|import and by nodeload (ctr import) ...")
            rx = sandbox.node("node-1").rx_bytes()
            base = timed(
                [
                    "bash",
                    "-o",
                    "pipefail",
                    "-c",
                    f"docker save {image}:{tag} | {ssh} ctr -n k8s.io images import -",
                ]
            )
            base_wire = sandbox.node("node-1").rx_bytes() - rx
            rx = sandbox.node("node-2").rx_bytes()
            argv = nodeload_argv(
                "push", f"{image}:{tag}", "--node", "node-2", "-F", str(sandbox.ssh_config_path), "--json"
            )
            run = timed(argv, env=bench_env(cache))
            wire = sandbox.node("node-2").rx_bytes() - rx
            (result,) = json.loads(run.stdout)["nodes"]
        runs = [
            FallbackRun("save|import", base.seconds, base_wire, "ssh"),
            FallbackRun("nodeload docker-daemon:", run.seconds, wire, str(result["reach"])),
        ]
    return runs


def fallback_rows(runs: list[FallbackRun]) -> list[tuple[str, ...]]:
    """Table rows of the warm push."""
    base = runs[0].seconds
    return [
        (
            "warm",
            r.tool,
            f"{r.seconds:.2f} s",
            f"{base / r.seconds:.1f}x",
            human_bytes(r.wire_bytes),
            r.reach,
        )
        for r in runs
    ]
