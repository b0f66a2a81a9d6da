"""``make demo``: nodeload's main job on a throwaway two-node sandbox.

Starts two sandbox nodes, builds a small image in the local Docker engine,
pushes it with the real ``nodeload push`` command, changes one layer, pushes
again, repeats the push, and prints the bytes each push moved per node next
to what the node's network interface saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from nodeload.report import human_bytes
from nodeload.sandbox.node import NodeContainer
from nodeload.sandbox.node_image import docker_client
from nodeload.sandbox.sandbox import Sandbox, sweep_leftovers
from nodeload.sandbox.test_images import LayerSpec, build_image

IMAGE = "nodeload-demo/app"
MiB = 1024 * 1024
# busybox, a 40 MiB "dependencies" layer and a 4 MiB "application" layer that changes.
BASE_LAYERS = [LayerSpec(40 * MiB, "deps")]


@dataclass
class Step:
    """One push of the demo and what it moved."""

    title: str
    tag: str
    report: dict[str, Any]
    wire: dict[str, int]


def push(sandbox: Sandbox, tag: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Run ``nodeload push --json`` to every node; return its report and node rx deltas."""
    before = {alias: sandbox.node(alias).rx_bytes() for alias in sandbox.aliases}
    argv = [sys.executable, "-m", "nodeload", "push", tag, "--json", "-F", str(sandbox.ssh_config_path)]
    for alias in sandbox.aliases:
        argv += ["--node", alias]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"nodeload push failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    wire = {alias: sandbox.node(alias).rx_bytes() - before[alias] for alias in sandbox.aliases}
    return json.loads(proc.stdout), wire


def run_on_node(node: NodeContainer, name: str) -> str:
    """Start the pushed image on the node with containerd's own ``ctr run``."""
    out = node.check_output(["ctr", "-n", "k8s.io", "run", "--rm", name, "nodeload-demo"])
    return out.strip()


def table(steps: list[Step]) -> Table:
    """The per-node byte table."""
    out = Table(title="nodeload push, per node")
    for column in (
        "push",
        "node",
        "blobs sent",
        "bytes sent",
        "bytes skipped",
        "wire (nodeload)",
        "node rx",
        "time",
        "CRI",
    ):
        out.add_column(column, justify="left" if column in ("push", "node") else "right")
    for step in steps:
        for node in step.report["nodes"]:
            alias = node["node"]
            out.add_row(
                step.title,
                alias,
                f"{node['blobs_sent']}/{node['blobs_total']}",
                human_bytes(node["bytes_sent"]),
                human_bytes(node["bytes_skipped"]),
                human_bytes(node["wire_bytes_sent"] or 0),
                human_bytes(step.wire[alias]),
                f"{node['seconds']:.2f}s",
                "yes" if node["cri_indexed"] else "no",
            )
    return out


def main() -> int:
    """Run the demo; exit status 0 when every push succeeded."""
    console = Console(width=120) if not Console().is_terminal else Console()
    client = docker_client()
    sweep_leftovers(client)
    console.print("[bold]1.[/] building the sandbox node image and starting 2 nodes (sshd + containerd)...")
    with Sandbox(nodes=2, client=client) as sandbox:
        console.print("[bold]2.[/] building nodeload-demo/app:v1 (busybox + 40 MiB deps + 4 MiB app layer)")
        build_image(client, f"{IMAGE}:v1", "hello from v1", [*BASE_LAYERS, LayerSpec(4 * MiB, "app-v1")])
        build_image(client, f"{IMAGE}:v2", "hello from v2", [*BASE_LAYERS, LayerSpec(4 * MiB, "app-v2")])
        steps = []
        for title, tag in (("v1 cold", "v1"), ("v2 changed", "v2"), ("v2 repeat", "v2")):
            console.print(f"[bold]3.[/] nodeload push {IMAGE}:{tag} --node node-1 --node node-2   ({title})")
            report, wire = push(sandbox, f"{IMAGE}:{tag}")
            steps.append(Step(title, tag, report, wire))
        console.print(table(steps))
        for alias in sandbox.aliases:
            said = run_on_node(sandbox.node(alias), f"docker.io/{IMAGE}:v2")
            console.print(f"{alias}: ctr run docker.io/{IMAGE}:v2 -> {said!r}")
        console.print(
            "bytes sent = blob bytes nodeload wrote; wire (nodeload) = what nodeload's SSH connection "
            "carried (kernel TCP counter); node rx = what the node's network interface received "
            "(TCP/IP headers included)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
