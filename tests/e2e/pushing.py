"""Helpers for end-to-end push tests: run the real CLI, read the node's own view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from nodeload.sandbox import NodeContainer, Sandbox


def nodeload(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nodeload`` as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "nodeload", *args], capture_output=True, text=True, timeout=600, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"nodeload {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def push_json(
    sandbox: Sandbox, image: str, *aliases: str, extra: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """``nodeload push IMAGE --json`` to the given sandbox nodes; the per-node reports."""
    args = ["push", image, "--json", "-F", str(sandbox.ssh_config_path), *extra]
    for alias in aliases or tuple(sandbox.aliases):
        args += ["--node", alias]
    report = json.loads(nodeload(*args).stdout)
    nodes: list[dict[str, Any]] = report["nodes"]
    assert all(n["status"] == "ok" for n in nodes), nodes
    return nodes


CONTENT_ROOT = "/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256"


def content_sizes(node: NodeContainer) -> dict[str, int]:
    """Digest -> exact size of every blob in the node's content store (all namespaces), once
    containerd's garbage collection has run: ``ctr import`` stores the archive's index under a
    lease of its own, and the collection that removes it after the import is asynchronous."""
    # Deleting a lease with --sync runs the collection before returning (where containerd runs).
    settle = "id=$(ctr leases create | awk '{print $1}') && ctr leases delete --sync \"$id\""
    # A node that never received anything has no blobs directory yet.
    listing = f"[ ! -d {CONTENT_ROOT} ] || find {CONTENT_ROOT} -type f -printf '%f %s\\n'"
    out = node.check_output(["sh", "-c", f"{{ {settle}; }} >/dev/null 2>&1; {listing}"])
    return {f"sha256:{name}": int(size) for name, size in (line.split() for line in out.splitlines() if line)}


def image_names(node: NodeContainer, namespace: str = "k8s.io") -> dict[str, str]:
    """Image name -> labels column, from ``ctr images ls``."""
    out = node.check_output(["ctr", "-n", namespace, "images", "ls"])
    names = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if fields:
            names[fields[0]] = fields[-1]
    return names


def run_image(node: NodeContainer, name: str, container: str, namespace: str = "k8s.io") -> str:
    """``ctr run --rm`` the image inside the node; what it printed."""
    return node.check_output(["ctr", "-n", namespace, "run", "--rm", name, container]).strip()


def write_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return it."""
    path.write_text(text)
    return path
