"""``make demo`` (``python -m nodeload.sandbox.demo [--keep]``): nodeload's main job on two
throwaway sandbox nodes.

Starts a kept sandbox named ``demo`` (``nodeload sandbox up``), builds a small image in the
local Docker engine, pushes it with the real ``nodeload push`` command, changes one layer,
pushes again, repeats the push, then ships the same change the usual way (``docker save | ssh
node ctr -n k8s.io images import -``) and puts both side by side: bytes each node's network
interface received and wall time. Every command is printed as it can be copied and run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nodeload.report import human_bytes
from nodeload.sandbox import kept
from nodeload.sandbox.node import NodeVariant
from nodeload.sandbox.node_image import docker_client
from nodeload.sandbox.sandbox import Sandbox, sweep_leftovers
from nodeload.sandbox.test_images import LayerSpec, build_image

NAME = "demo"
IMAGE = "nodeload-demo/app"
MiB = 1024 * 1024
# busybox, a 40 MiB "dependencies" layer and a 4 MiB "application" layer that changes.
BASE_LAYERS = [LayerSpec(40 * MiB, "deps")]


@dataclass
class Step:
    """One push of the demo and what it moved."""

    title: str
    command: list[str]
    report: dict[str, Any]
    wire: dict[str, int]  # node -> bytes its interface received
    seconds: float  # wall time of the command


def nodeload_command() -> list[str]:
    """How the user runs nodeload from a shell: ``nodeload`` when that is this one, else the
    script beside this Python (``make demo`` runs from the project's venv), else ``-m``."""
    here = Path(sys.executable).parent / "nodeload"
    found = shutil.which("nodeload")
    if found is not None and Path(found).resolve() == here.resolve():
        return ["nodeload"]
    return [str(here)] if here.exists() else [sys.executable, "-m", "nodeload"]


class Demo:
    """The demo's steps, numbered as they are printed."""

    def __init__(self, console: Console, sandbox: Sandbox, config: str) -> None:
        self.console, self.sandbox, self.config = console, sandbox, config
        self.number = 0

    def say(self, text: str) -> None:
        """Print the next numbered step."""
        self.number += 1
        self.console.print(f"[bold]{self.number}.[/] {text}", highlight=False)

    def command(self, argv: Sequence[str]) -> None:
        """Show a command as it can be copied."""
        self.console.print(f"   $ {shlex.join(argv)}", highlight=False, markup=False, soft_wrap=True)

    def push(self, title: str, tag: str) -> Step:
        """``nodeload push`` to every node, timed by the clock on the wall; node rx deltas."""
        command = [*nodeload_command(), "push", f"{IMAGE}:{tag}", "-F", self.config]
        for alias in self.sandbox.aliases:
            command += ["--node", alias]
        self.say(f"nodeload push {IMAGE}:{tag} ({title})")
        self.command(command)
        before = self._rx()
        started = time.monotonic()
        argv = [*command, "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"nodeload push failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        wire = {alias: rx - before[alias] for alias, rx in self._rx().items()}
        return Step(title, command, json.loads(proc.stdout), wire, seconds)

    def ctr_import(self, tag: str, alias: str) -> tuple[int, float]:
        """``docker save | ssh NODE ctr import``: what the node received and the wall time."""
        ssh = shlex.join(["ssh", "-F", self.config, alias, "ctr", "-n", "k8s.io", "images", "import", "-"])
        shell = f"docker save {IMAGE}:{tag} | {ssh}"
        self.say(f"the same change the usual way, to {alias}: docker save | ssh | ctr import")
        self.console.print(f"   $ {shell}", highlight=False, markup=False, soft_wrap=True)
        before = self._rx()[alias]
        started = time.monotonic()
        subprocess.run(["sh", "-c", shell], check=True, capture_output=True)
        return self._rx()[alias] - before, time.monotonic() - started

    def _rx(self) -> dict[str, int]:
        return {alias: self.sandbox.node(alias).rx_bytes() for alias in self.sandbox.aliases}


def table(steps: list[Step]) -> Table:
    """The per-node byte table."""
    out = Table(title="nodeload push, per node")
    for column in (
        "push",
        "node",
        "blobs sent",
        "bytes sent",
        "bytes skipped",
        "node rx",
        "wall time",
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
                human_bytes(step.wire[alias]),
                f"{step.seconds:.2f}s",
                "yes" if node["cri_indexed"] else "no",
            )
    return out


def comparison(change: Step, alias: str, usual: tuple[int, float]) -> Table:
    """nodeload's bytes and time for the change beside the usual way's."""
    out = Table(title=f"the change v1 -> v2, to {alias}")
    for column in ("how", "node rx", "wall time"):
        out.add_column(column, justify="left" if column == "how" else "right")
    out.add_row("nodeload push", human_bytes(change.wire[alias]), f"{change.seconds:.2f}s")
    out.add_row("docker save | ssh | ctr import", human_bytes(usual[0]), f"{usual[1]:.2f}s")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 0 when every push succeeded."""
    parser = argparse.ArgumentParser(
        prog="python -m nodeload.sandbox.demo",
        description="nodeload's main job on two throwaway sandbox nodes (make demo).",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the nodes up (remove with: nodeload sandbox down --name demo)",
    )
    args = parser.parse_args(argv)
    console = Console(width=120) if not Console().is_terminal else Console()
    client = docker_client()
    sweep_leftovers(client)  # of test sessions that died
    earlier = kept.find(NAME) is not None
    if kept.down(NAME, client) or earlier:
        console.print(f"removed the nodes an earlier demo kept ({NAME})")
    started = time.monotonic()
    console.print(
        "[bold]1.[/] starting 2 sandbox nodes (sshd + containerd + CRI), building their image if needed"
    )
    up = [*nodeload_command(), "sandbox", "up", "--name", NAME, "--nodes", "2"]
    console.print(f"   $ {shlex.join(up)}", highlight=False, markup=False)
    record, sandbox = kept.up(NAME, [NodeVariant()] * 2, client)
    try:
        demo = Demo(console, sandbox, str(record.ssh_config_path))
        demo.number = 1
        demo.say(f"building {IMAGE}:v1 and :v2 (busybox + 40 MiB deps + a 4 MiB app layer that differs)")
        build_image(client, f"{IMAGE}:v1", "hello from v1", [*BASE_LAYERS, LayerSpec(4 * MiB, "app-v1")])
        build_image(client, f"{IMAGE}:v2", "hello from v2", [*BASE_LAYERS, LayerSpec(4 * MiB, "app-v2")])
        steps = [demo.push("v1 cold", "v1"), demo.push("v2 changed", "v2"), demo.push("v2 repeat", "v2")]
        console.print(table(steps))
        usual = demo.ctr_import("v2", "node-1")
        console.print(comparison(steps[1], "node-1", usual))
        demo.say("running the pushed image on each node with containerd's own ctr")
        for alias in sandbox.aliases:
            run = [
                "ssh",
                "-F",
                demo.config,
                alias,
                "ctr",
                "-n",
                "k8s.io",
                "run",
                "--rm",
                f"docker.io/{IMAGE}:v2",
                "demo",
            ]
            demo.command(run)
            said = subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()
            console.print(f"   {said}", highlight=False, markup=False)
        console.print(
            "bytes sent = blob bytes nodeload wrote; node rx = what the node's network interface "
            "received (TCP/IP headers included); wall time = the whole command, as `time` shows it."
        )
    finally:
        if not args.keep:
            kept.down(NAME, client)
    console.print(f"done in {time.monotonic() - started:.1f}s")
    if args.keep:
        console.print("the nodes stay up; try:", highlight=False)
        config, command = str(record.ssh_config_path), nodeload_command()
        for argv in (
            ["ssh", "-F", config, "node-1", "ctr", "-n", "k8s.io", "images", "ls"],
            [*command, "push", f"{IMAGE}:v1", "-F", config, "--node", "node-1", "--node", "node-2"],
            [*command, "sandbox", "down", "--name", NAME],
        ):
            console.print(f"   $ {shlex.join(argv)}", highlight=False, markup=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
