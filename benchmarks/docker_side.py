"""The Docker side (issue #8): the ``nodeload serve`` endpoint driven by real clients, and the
Docker Engine target, each against the pipeline users would otherwise use.

- endpoint: ``nodeload serve --node N -- docker push`` and ``-- skopeo copy`` of the image
  (cold, then v2 warm), against ``docker save | ssh ctr import``; and, for the bound of every
  path that goes through the engine's push, ``docker push`` alone into a plain local registry
  (Debian's docker-registry on 127.0.0.1, no node, nothing of nodeload's);
- Docker target: ``nodeload push --store docker`` into a node running its own dockerd, against
  ``docker save | ssh node docker load`` into another.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from rich.console import Console

from benchmarks.common import bench_env, nodeload_argv, timed
from nodeload.report import human_bytes
from nodeload.sandbox import NodeVariant, Sandbox, ensure_dockerd_node_image

HEADERS = ("push", "tool", "time", "speed vs baseline", "bytes on the wire")
# Where the plain registry listens: Docker pushes to 127.0.0.0/8 over plain HTTP.
ENGINE_ALONE = "127.0.0.1:5754"
ALONE = "docker push alone (local registry, no node)"


@dataclass
class SideRun:
    """One measured push."""

    scenario: str
    tool: str
    seconds: float
    wire_bytes: int
    baseline: str


def docker_side(client: Any, image: str, layouts: Path, console: Console) -> list[SideRun]:
    """Cold and warm pushes through the endpoint and into a remote Docker Engine."""
    runs = _endpoint(client, image, layouts, console)
    runs += _docker_target(client, image, console)
    return runs


def _measure(
    sandbox: Sandbox, alias: str, argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, int]:
    node = sandbox.node(alias)
    before = node.rx_bytes()
    seconds = timed(argv, env).seconds
    return seconds, node.rx_bytes() - before


def _endpoint(client: Any, image: str, layouts: Path, console: Console) -> list[SideRun]:
    runs: list[SideRun] = []
    with Sandbox(nodes=3, client=client) as sandbox:
        config = str(sandbox.ssh_config_path)
        baseline = "save|import"
        for scenario, tag in (("cold", "v1"), ("warm", "v2")):
            console.print(f"  endpoint: {scenario} push of {image}:{tag} ...")
            pipe = f"docker save {image}:{tag} | ssh -F {config} node-1 ctr -n k8s.io images import -"
            seconds, wire = _measure(sandbox, "node-1", ["bash", "-o", "pipefail", "-c", pipe])
            runs.append(SideRun(scenario, baseline, seconds, wire, baseline))
            serve = nodeload_argv("serve", "-F", config, "--listen", "127.0.0.1:5752")
            tag_and_push = (
                f"docker tag {image}:{tag} $NODELOAD_REGISTRY/bench/app:{tag} && "
                f"docker push -q $NODELOAD_REGISTRY/bench/app:{tag} >/dev/null"
            )
            seconds, wire = _measure(
                sandbox, "node-2", [*serve, "--node", "node-2", "--", "sh", "-c", tag_and_push]
            )
            runs.append(SideRun(scenario, "serve -- docker push", seconds, wire, baseline))
            copy = [
                "skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layouts / tag}:{tag}",
                f"docker://$NODELOAD_REGISTRY/bench/app:{tag}",
            ]  # fmt: skip
            command = ["sh", "-c", " ".join(copy)]
            seconds, wire = _measure(sandbox, "node-3", [*serve, "--node", "node-3", "--", *command])
            runs.append(SideRun(scenario, "serve -- skopeo copy oci:", seconds, wire, baseline))
    subprocess.run(["docker", "rmi", "-f", "127.0.0.1:5752/bench/app:v1", "127.0.0.1:5752/bench/app:v2"],
                   capture_output=True, check=False)  # fmt: skip
    return runs + _engine_alone(image, console)


def _engine_alone(image: str, console: Console) -> list[SideRun]:
    """``docker push`` into a plain registry on this machine: the engine's own part of every push
    through it (a HEAD per layer, compressing and uploading the changed one, the manifest)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        console.print("  (docker push alone: skipped, Debian's docker-registry is not installed)")
        return []
    runs: list[SideRun] = []
    with tempfile.TemporaryDirectory() as storage:
        config = Path(storage) / "config.yml"
        config.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}/data\n"
            f"http:\n  addr: {ENGINE_ALONE}\n"
        )
        registry = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_for(f"http://{ENGINE_ALONE}/v2/")
            for scenario, tag in (("cold", "v1"), ("warm", "v2")):
                console.print(f"  docker push alone: {scenario} push of {image}:{tag} ...")
                target = f"{ENGINE_ALONE}/bench/app:{tag}"
                subprocess.run(["docker", "tag", f"{image}:{tag}", target], check=True)
                seconds = timed(["docker", "push", "-q", target]).seconds
                runs.append(
                    SideRun(
                        scenario, "docker push alone (local registry, no node)", seconds, 0, "save|import"
                    )
                )
                subprocess.run(["docker", "rmi", target], capture_output=True, check=False)
        finally:
            registry.terminate()
            registry.wait(timeout=10)
    return runs


def _wait_for(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).ok:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the local registry at {url} did not come up")
        time.sleep(0.1)


def _docker_target(client: Any, image: str, console: Console) -> list[SideRun]:
    runs: list[SideRun] = []
    node_image = ensure_dockerd_node_image(client)
    variants = [NodeVariant(dockerd=True), NodeVariant(dockerd=True)]
    with (
        tempfile.TemporaryDirectory() as cache,
        Sandbox(variants, image=node_image, client=client) as sandbox,
    ):
        config = str(sandbox.ssh_config_path)
        baseline = "save|docker load"
        for scenario, tag in (("cold", "v1"), ("warm", "v2")):
            console.print(f"  docker target: {scenario} push of {image}:{tag} ...")
            pipe = f"docker save {image}:{tag} | ssh -F {config} node-1 docker load -q"
            seconds, wire = _measure(sandbox, "node-1", ["bash", "-o", "pipefail", "-c", pipe])
            runs.append(SideRun(scenario, baseline, seconds, wire, baseline))
            push = nodeload_argv(
                "push", f"{image}:{tag}", "--store", "docker", "--node", "node-2", "-F", config
            )
            seconds, wire = _measure(
                sandbox, "node-2", push, bench_env(cache)
            )  # an empty layer cache at first
            runs.append(SideRun(scenario, "nodeload --store docker", seconds, wire, baseline))
    return runs


def docker_side_rows(runs: list[SideRun]) -> list[tuple[str, ...]]:
    """Table rows; each nodeload row against the baseline of its scenario and section."""
    rows: list[tuple[str, ...]] = []
    for run in runs:
        base = next(r for r in runs if r.scenario == run.scenario and r.tool == run.baseline)
        speedup = f"{base.seconds / run.seconds:.1f}x"
        rows.append((run.scenario, run.tool, f"{run.seconds:.2f} s", speedup, human_bytes(run.wire_bytes)))
    return rows
