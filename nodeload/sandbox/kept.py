"""Sandboxes that stay: ``nodeload sandbox up|down|status``.

A kept sandbox is a :class:`~nodeload.sandbox.Sandbox` whose state directory is
``~/.cache/nodeload/sandboxes/NAME`` (key pair, ``ssh_config``, ``known_hosts``, ``sandbox.json``)
and whose containers carry the ``nodeload.sandbox.kept=NAME`` label: nothing sweeps them, they
start again with the engine on the ports they were given, and ``down`` removes them by that
label, whatever is left of the directory.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from nodeload.errors import UsageError
from nodeload.sandbox.node import K3S_CONTAINERD_SOCKET, KEPT_LABEL, NodeVariant
from nodeload.sandbox.node_image import SandboxError, cache_dir, docker_client
from nodeload.sandbox.sandbox import Sandbox

STATE_FILE = "sandbox.json"

# What ``--variant`` names: the kinds of node a user meets.
VARIANTS: dict[str, NodeVariant] = {
    "plain": NodeVariant(),
    "k3s": NodeVariant(containerd_socket=K3S_CONTAINERD_SOCKET),
    "sudo": NodeVariant(login="ubuntu", sudo="nopasswd"),
    "bastion": NodeVariant(internal=True),
}


def sandboxes_dir() -> Path:
    """Where kept sandboxes keep their files (``~/.cache/nodeload/sandboxes/NAME``)."""
    return cache_dir() / "sandboxes"


@dataclass(frozen=True)
class KeptNode:
    """One node of a kept sandbox as ``status`` shows it."""

    alias: str
    container: str
    state: str  # the container's: running, exited, restarting... or "missing"
    port: int | None  # its sshd on 127.0.0.1 (None: reached through the bastion)


@dataclass(frozen=True)
class KeptSandbox:
    """A kept sandbox, from its state file."""

    name: str
    directory: Path
    aliases: tuple[str, ...]
    containers: dict[str, str]  # alias (and "bastion") -> container name
    ports: dict[str, int]

    @property
    def ssh_config_path(self) -> Path:
        """``ssh -F`` this (and ``nodeload push -F``) to reach the nodes by alias."""
        return self.directory / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        """The nodes' host keys (the ssh_config points at it)."""
        return self.directory / "known_hosts"

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` prints."""
        return {
            "name": self.name,
            "ssh_config": str(self.ssh_config_path),
            "known_hosts": str(self.known_hosts_path),
            "nodes": list(self.aliases),
            "ports": self.ports,
        }


def check_name(name: str) -> str:
    """``name`` if it can name a directory and a label.

    Raises:
        UsageError: it cannot.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
        raise UsageError(f"invalid sandbox name {name!r}: lowercase letters, digits, '.', '_', '-'")
    return name


def variants(names: Sequence[str], nodes: int) -> list[NodeVariant]:
    """One variant per node: ``names`` in order, the last one for the nodes after it.

    Raises:
        UsageError: an unknown variant, or more variants than nodes.
    """
    for name in names:
        if name not in VARIANTS:
            raise UsageError(f"unknown --variant {name!r}: one of {', '.join(VARIANTS)}")
    if len(names) > nodes:
        raise UsageError(f"{len(names)} variants for {nodes} node(s): give --nodes {len(names)}")
    chosen = list(names) or ["plain"]
    return [VARIANTS[chosen[min(i, len(chosen) - 1)]] for i in range(nodes)]


def up(
    name: str, node_variants: Sequence[NodeVariant], client: docker.DockerClient | None = None
) -> tuple[KeptSandbox, Sandbox]:
    """Start the kept sandbox ``name``; what is kept of it, and the running sandbox.

    Raises:
        SandboxError: one of that name is up already, or a node did not start (nothing is left).
    """
    directory = sandboxes_dir() / check_name(name)
    if directory.exists() or _containers(client or docker_client(), name):
        raise SandboxError(f"sandbox {name} is up already: nodeload sandbox down --name {name}")
    sandbox = Sandbox(list(node_variants), client=client, kept=name, directory=directory)
    try:
        sandbox.start()
    except BaseException:
        sandbox.stop()
        raise
    kept = _record(name, sandbox)
    return kept, sandbox


def _record(name: str, sandbox: Sandbox) -> KeptSandbox:
    started = list(zip(sandbox.aliases, sandbox.nodes, strict=True))
    if sandbox.bastion is not None:
        started.append(("bastion", sandbox.bastion))
    containers = {alias: str(node.get_wrapped_container().name) for alias, node in started}
    ports = {alias: node.ssh_port for alias, node in started if not node.variant.internal}
    kept = KeptSandbox(name, sandbox.directory, tuple(sandbox.aliases), containers, ports)
    (sandbox.directory / STATE_FILE).write_text(json.dumps(kept.to_json() | {"containers": containers}))
    return kept


def find(name: str) -> KeptSandbox | None:
    """The kept sandbox ``name``, or None when none is up (no state file)."""
    directory = sandboxes_dir() / check_name(name)
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return KeptSandbox(
        name,
        directory,
        tuple(state["nodes"]),
        {str(k): str(v) for k, v in state["containers"].items()},
        {str(k): int(v) for k, v in state["ports"].items()},
    )


def status(kept: KeptSandbox, client: docker.DockerClient | None = None) -> list[KeptNode]:
    """Each node's container state, read from the engine."""
    client = client or docker_client()
    found = {c.name: c.status for c in _containers(client, kept.name)}
    return [
        KeptNode(alias, container, found.get(container, "missing"), kept.ports.get(alias))
        for alias, container in kept.containers.items()
    ]


def down(name: str, client: docker.DockerClient | None = None) -> int:
    """Remove every container, volume and network of the kept sandbox ``name``, and its files;
    the number of containers removed."""
    client = client or docker_client()
    selector = {"label": f"{KEPT_LABEL}={check_name(name)}"}
    removed = 0
    for container in _containers(client, name):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
            removed += 1
    for volume in client.volumes.list(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    for network in client.networks.list(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    shutil.rmtree(sandboxes_dir() / name, ignore_errors=True)
    return removed


def _containers(client: docker.DockerClient, name: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{KEPT_LABEL}={name}"}))
