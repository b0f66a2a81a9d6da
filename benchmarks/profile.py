"""Where a cold push's time goes (the throughput bound of issue #9), rerunnable on any machine.

    python -m benchmarks.profile [--size-mib 250]

One fresh sandbox node and an OCI layout of incompressible layers; then, side by side:

- ``cat blobs | ssh node 'cat > file'``, the reference of the throughput ratio;
- a cold ``nodeload push --no-unpack`` of the same blobs;
- the same cold push again under py-spy (sampling nodeload's CPU, idle time excluded), its
  samples grouped by the library the innermost Python frame is in.

For each, the CPU time every party spent: the client process, the node (its container's
cgroup: sshd and containerd) and the whole machine. Needs py-spy (in the dev extra) and root.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import (
    MiB,
    bench_env,
    compile_nodeload,
    empty_node,
    machine_cpu_seconds,
    nodeload_argv,
    print_table,
)
from nodeload.sandbox import LayerSpec, Sandbox, build_image, docker_client
from nodeload.sandbox.measure import run_measured

IMAGE = "nodeload-bench/profile:v1"

# Innermost frames where a thread blocks inside C (py-spy cannot always tell that from running):
# an idle worker waiting for its queue, a thread whose whole target is a C call (gRPC's poller).
WAITING = ("_worker (", "Thread.run (")

# Where a sample's innermost Python frame is, in order: the first match names its group.
GROUPS = (
    ("asyncssh/crypto", "SSH encryption (asyncssh -> cryptography)"),
    ("asyncssh/packet", "SSH packet framing (asyncssh)"),
    ("asyncssh", "SSH channels and flow control (asyncssh)"),
    ("grpc", "gRPC (grpcio)"),
    ("google/protobuf", "protobuf"),
    ("asyncio", "event loop (asyncio)"),
    ("selectors", "event loop (asyncio)"),
    ("nodeload/", "nodeload's own code (reading, hashing, planning)"),
    ("threading", "other threads"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=250, help="image size (default 250)")
    parser.add_argument("--top", type=int, default=12, help="functions to list (default 12)")
    args = parser.parse_args()
    console = Console(stderr=True)
    compile_nodeload()
    client = docker_client()
    layers = [LayerSpec(args.size_mib * MiB // 4, f"profile-{i}") for i in range(4)]
    build_image(client, IMAGE, "v1", layers)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work, Sandbox(nodes=1, client=client) as sandbox:
        layout = Path(work) / "layout"
        subprocess.run(
            ["skopeo", "copy", "--quiet", f"docker-daemon:{IMAGE}", f"oci:{layout}:v1"], check=True
        )
        blobs = sorted(str(p) for p in (layout / "blobs" / "sha256").iterdir())
        config = str(sandbox.ssh_config_path)
        node = sandbox.node("node-1")
        node_cpu = _cgroup_cpu_reader(node.container_id)

        console.print("profile: cat | ssh 'cat > file' ...")
        pipe = f"cat {' '.join(blobs)} | ssh -F {config} node-1 'cat > /var/tmp/raw && rm /var/tmp/raw'"
        raw = _measure(["bash", "-o", "pipefail", "-c", pipe], node_cpu)

        console.print("profile: a cold nodeload push --no-unpack ...")
        env = bench_env(str(Path(work) / "cache"))
        push = nodeload_argv(
            "push", f"oci:{layout}:v1", "--node", "node-1", "-F", config, "--no-unpack", "--name", IMAGE
        )
        pushed = _measure(push, node_cpu, env=env)
        empty_node(node)
        console.print("profile: the same cold push under py-spy ...")
        samples = Path(work) / "samples.txt"
        spy = [_py_spy(), "record", "--format", "raw", "--rate", "250", "-o", str(samples), "--", *push]
        _measure(spy, node_cpu, env=env)
        stacks = _read_samples(samples)

    rows = [
        ["cat | ssh 'cat > file'", *_cells(raw)],
        ["nodeload push --no-unpack", *_cells(pushed)],
    ]
    headers = ("run", "time", "client CPU", "node CPU (sshd, containerd)", "machine CPU")
    print_table(f"{args.size_mib} MiB of blobs to one node, loopback", headers, rows, True)
    total = sum(stacks.values()) or 1
    grouped: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    waiting = sum(count for stack, count in stacks.items() if stack.rsplit(";", 1)[-1].startswith(WAITING))
    total -= waiting
    console.print(f"profile: {waiting} samples of threads blocked in C left out, {total} kept")
    for stack, count in stacks.items():
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(WAITING):
            continue
        grouped[_group(leaf)] += count
        leaves[leaf] += count
    group_rows = [[name, f"{count / total:.0%}"] for name, count in grouped.most_common()]
    print_table("nodeload's CPU samples, by library", ("where", "share"), group_rows, True)
    leaf_rows = [[leaf, f"{count / total:.0%}"] for leaf, count in leaves.most_common(args.top)]
    print_table("nodeload's CPU samples, innermost frames", ("frame", "share"), leaf_rows, True)
    return 0


class _Usage:
    """Wall time and CPU seconds of one measured command."""

    def __init__(self, seconds: float, client: float, node: float | None, machine: float) -> None:
        self.seconds, self.client, self.node, self.machine = seconds, client, node, machine


def _measure(argv: list[str], node_cpu: Any, env: dict[str, str] | None = None) -> _Usage:
    node_before, machine_before, start = node_cpu(), machine_cpu_seconds(), time.monotonic()
    measured = run_measured(argv, env=env, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    if measured.code != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed ({measured.code})")
    node_after = node_cpu()
    node = None if node_before is None or node_after is None else node_after - node_before
    return _Usage(seconds, measured.cpu_seconds, node, machine_cpu_seconds() - machine_before)


def _py_spy() -> str:
    """py-spy from this environment (the dev extra installs it next to python), else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def _cgroup_cpu_reader(container_id: str) -> Any:
    """A function giving the container's CPU seconds so far (cgroup v1 cpuacct or v2 cpu.stat)."""
    for path in _candidates(container_id):
        if path.name == "cpuacct.usage":
            return lambda p=path: int(p.read_text()) / 1e9
        return lambda p=path: _usage_usec(p) / 1e6
    return lambda: None


def _candidates(container_id: str) -> Iterator[Path]:
    root = Path("/sys/fs/cgroup")
    for pattern in (f"cpuacct/**/*{container_id}*/cpuacct.usage", f"**/*{container_id}*/cpu.stat"):
        yield from root.glob(pattern)


def _usage_usec(path: Path) -> int:
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return 0


def _read_samples(path: Path) -> dict[str, int]:
    """py-spy's raw format: one ``frame;frame;...;frame COUNT`` line per distinct stack."""
    stacks: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def _group(frame: str) -> str:
    for needle, name in GROUPS:
        if needle in frame:
            return name
    return "other"


def _cells(usage: _Usage) -> list[str]:
    node = "n/a" if usage.node is None else f"{usage.node:.2f} s"
    return [f"{usage.seconds:.2f} s", f"{usage.client:.2f} s", node, f"{usage.machine:.2f} s"]


if __name__ == "__main__":
    raise SystemExit(main())
