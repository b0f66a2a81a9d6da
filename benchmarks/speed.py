"""How close nodeload gets to the floors of its own path (issue #9), each as a ratio in one run.

- throughput: the image's blobs piped through ``ssh node 'cat > file'`` against a cold
  ``nodeload push --no-unpack`` of the same OCI layout (the node's content is deleted between
  runs, so every push is cold);
- latency: ``ssh node true`` against a repeat ``nodeload push`` that has nothing to send;
- memory: 5 images to 20 nodes in one run (default ``--parallel``, 8 nodes at a time), nodeload's
  peak RSS.

The cold-from-the-engine and warm ``containerd:`` ratios come from the pushes section.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import MiB, bench_env, empty_node, median, nodeload_argv, timed
from nodeload.sandbox import LayerSpec, Sandbox, build_image

MEMORY_NODES = 20
MEMORY_IMAGES = 5
MEMORY_IMAGE = "nodeload-bench/load"


@dataclass
class Speed:
    """Medians of the floor measurements."""

    raw_seconds: float  # cat blobs | ssh node 'cat > file'
    cold_seconds: float  # nodeload push --no-unpack, cold
    ssh_true_seconds: float
    repeat_seconds: float  # nodeload push, nothing to send
    bytes: int  # the blobs' total size
    repeat_timings: dict[str, float]
    ingest_seconds: float = 0.0  # containerd's own ingest of the blobs, on the node (no network)
    imports_seconds: float = 0.0  # starting Python and importing what a push needs
    memory_nodes: int = 0
    memory_peak_rss: int = 0
    memory_seconds: float = 0.0


def speed(layout: Path, tag: str, runs: int, console: Console, client: Any) -> Speed:
    """Throughput and latency against one fresh node; memory against 20."""
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    total = sum(blob.stat().st_size for blob in blobs)
    name = "example.com/bench-speed:v1"
    with tempfile.TemporaryDirectory() as cache, Sandbox(nodes=1, client=client) as sandbox:
        config = str(sandbox.ssh_config_path)
        node = sandbox.node("node-1")
        ssh = ["ssh", "-F", config, "node-1"]
        push = nodeload_argv("push", f"oci:{layout}:{tag}", "--node", "node-1", "-F", config, "--name", name)
        env = bench_env(cache)
        raw, cold = [], []
        for attempt in range(1, runs + 1):
            console.print(f"  throughput {attempt}/{runs}: raw ssh, then a cold nodeload push ...")
            files = " ".join(str(blob) for blob in blobs)
            pipe = f"cat {files} | {' '.join(ssh)} 'cat > /var/tmp/raw && rm /var/tmp/raw'"
            raw.append(timed(["bash", "-o", "pipefail", "-c", pipe]).seconds)
            cold.append(timed([*push, "--no-unpack"], env=env).seconds)
            empty_node(node)  # CRI keeps a record of its own (named by the config digest): both go
        console.print("  bound: containerd's own ingest of the same blobs, on the node ...")
        ingest = _ingest_floor(sandbox, blobs)
        console.print("  latency: ssh true, then repeat pushes ...")
        timed(push, env=env)  # the image is there (unpacked, CRI) from now on
        ssh_true = [timed([*ssh, "true"]).seconds for _ in range(max(5, runs))]
        repeats = [timed([*push, "--json"], env=env) for _ in range(max(5, runs))]
        repeat = sorted(repeats, key=lambda r: r.seconds)[len(repeats) // 2]
        timings = json.loads(repeat.stdout)["nodes"][0]["timings"]
    imports = median([timed([sys.executable, "-c", _PUSH_IMPORTS]).seconds for _ in range(max(5, runs))])
    result = Speed(
        median(raw), median(cold), median(ssh_true), repeat.seconds, total, timings, ingest, imports
    )
    _memory(result, console, client)
    return result


# What `nodeload push` imports before it can connect (the CLI, SSH, gRPC, the containerd target).
_PUSH_IMPORTS = "import nodeload.cli.push, nodeload.api, nodeload.stores.containerd, nodeload.transports.ssh"


def _ingest_floor(sandbox: Sandbox, blobs: list[Path]) -> float:
    """Seconds ``ctr content ingest`` takes to store the blobs on the node from a local file: what
    containerd needs with no network and no client at all. The content is removed afterwards."""
    node = sandbox.node("node-1")
    node.check_output(["mkdir", "-p", "/var/tmp/floor"])
    for blob in blobs:
        subprocess.run(
            ["docker", "cp", str(blob), f"{node.container_id}:/var/tmp/floor/{blob.name}"], check=True
        )
    ingest = 'ctr -n k8s.io content ingest --expected-digest "sha256:${f##*/}" "floor-${f##*/}" < "$f"'
    script = f"for f in /var/tmp/floor/*; do {ingest} || exit 1; done"
    seconds = timed(["docker", "exec", node.container_id, "sh", "-c", script]).seconds
    digests = [f"sha256:{blob.name}" for blob in blobs]
    node.check_output(["ctr", "-n", "k8s.io", "content", "rm", *digests])
    node.check_output(["rm", "-rf", "/var/tmp/floor"])
    return seconds


def _memory(result: Speed, console: Console, client: Any) -> None:
    """One run of MEMORY_IMAGES images to MEMORY_NODES nodes (default --parallel): peak RSS."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        sources = []
        for i in range(1, MEMORY_IMAGES + 1):
            tag = f"{MEMORY_IMAGE}:v{i}"
            build_image(client, tag, f"v{i}", [LayerSpec(16 * MiB, f"load-{i}")])
            sources.append(tag)  # from the Docker engine, exported and compressed in the run
        console.print(f"  memory: starting {MEMORY_NODES} nodes ...")
        with Sandbox(nodes=MEMORY_NODES, client=client) as sandbox:
            argv = nodeload_argv(
                "push", *sources, "-F", str(sandbox.ssh_config_path), "--json", "--export", "save"
            )
            for alias in sandbox.aliases:
                argv += ["--node", alias]
            console.print(f"  memory: {MEMORY_IMAGES} images to {MEMORY_NODES} nodes in one run ...")
            run = timed(argv, env=bench_env(tmp))
            report = json.loads(run.stdout)
            if not all(node["status"] == "ok" for node in report["nodes"]):
                raise SystemExit(f"the {MEMORY_NODES}-node push failed: {report}")
    result.memory_nodes, result.memory_peak_rss, result.memory_seconds = (
        MEMORY_NODES,
        run.peak_rss,
        run.seconds,
    )
