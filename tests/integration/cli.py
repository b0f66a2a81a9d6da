"""Running ``nodeload`` as a user does, against the real containerd and sshd of the fixtures,
and reading back what the node really holds with ``ctr``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.oci import LayoutInfo, WrittenImage, write_layout
from tests.integration.nodes import Containerd, Sshd

REPO = Path(__file__).resolve().parents[2]
USER = "nodeload-it"


@dataclass(frozen=True)
class Run:
    """A finished ``nodeload`` process."""

    code: int
    out: str
    err: str

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The per-node results of ``--json``."""
        nodes: list[dict[str, Any]] = json.loads(self.out)["nodes"]
        return nodes


@dataclass(frozen=True)
class Cli:
    """Runs ``nodeload`` for a user whose own SSH setup (agent, ~/.ssh) cannot help."""

    sshd: Sshd
    env: Mapping[str, str]

    def run(self, *args: str, env: Mapping[str, str] | None = None) -> Run:
        """``nodeload ARGS`` (``env`` adds to the CLI's environment)."""
        proc = subprocess.run(
            [sys.executable, "-m", "nodeload", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def push(
        self,
        source: LayoutInfo | str,
        containerd: Containerd | None,
        *args: str,
        nodes: Sequence[str] = (),
        login: bool = True,
        json: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Run:
        """Push ``source`` to ``nodes`` (default: the test sshd) and ``containerd``'s socket.

        ``login`` adds the test's client key and known_hosts; ``json`` adds ``--json``.
        """
        argv = ["push", source if isinstance(source, str) else f"oci:{source.path}", *args]
        for node in nodes or [self.sshd.node]:
            argv += ["--node", node]
        if containerd is not None:
            argv += ["--containerd-socket", str(containerd.socket)]
        if login:
            argv += ["-i", str(self.sshd.client_key), "--known-hosts", str(self.sshd.known_hosts)]
        return self.run(*argv, *(["--json"] if json else []), env=env)

    def push_ok(
        self, source: LayoutInfo | str, containerd: Containerd, *args: str, **kw: Any
    ) -> dict[str, Any]:
        """Push to one node, expect success, and return its JSON result."""
        run = self.push(source, containerd, *args, **kw)
        assert run.code == 0, run.err
        (result,) = run.nodes
        assert (result["status"], result["error"]) == ("ok", None)
        return result


# -- the node's real state ---------------------------------------------------


def content(node: Containerd, namespace: str = "k8s.io") -> set[str]:
    """Digests in the node's content store."""
    return set(node.ctr("content", "ls", "--quiet", namespace=namespace).split())


def images(node: Containerd, namespace: str = "k8s.io") -> set[str]:
    """Image record names on the node."""
    return set(node.ctr("images", "ls", "--quiet", namespace=namespace).split())


def snapshots(node: Containerd, namespace: str) -> set[str]:
    """Snapshot keys (committed snapshots are named by chain ID)."""
    lines = node.ctr("snapshots", "ls", namespace=namespace).splitlines()[1:]
    return {line.split()[0] for line in lines if line.strip()}


def stored_size(node: Containerd, digest: str) -> int:
    """A blob's size as containerd stored it on disk."""
    blobs = node.root / "root" / "io.containerd.content.v1.content" / "blobs"
    algorithm, hexpart = digest.split(":")
    return (blobs / algorithm / hexpart).stat().st_size


# -- sources -----------------------------------------------------------------


def layout(tmp_path: Path, seed: int, **kwargs: Any) -> LayoutInfo:
    """A random OCI layout of this test's own (``seed``)."""
    return write_layout(tmp_path / f"oci-{seed}", seed=seed, **kwargs)


def blobs_of(image: WrittenImage) -> set[str]:
    """A platform's manifest, config and layers."""
    return {image.manifest.digest, image.config.digest, *(layer.digest for layer in image.layers)}


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI chain IDs: the snapshot names of an unpacked image."""
    chain = [diff_ids[0]]
    for diff_id in diff_ids[1:]:
        chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def keygen(path: Path) -> Path:
    """A new ed25519 key pair; returns the private key."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path
