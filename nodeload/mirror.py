"""Whether a node pulls an image's registry through a mirror: the cluster's peer-to-peer one.

Spegel writes containerd's ``hosts.toml`` for each registry it mirrors (every node serves its
containerd content to its peers); k3s's embedded registry is configured in
``/etc/rancher/k3s/registries.yaml``; any other mirror is a ``hosts.toml`` too. When the node's
config names a mirror for the image's registry host, a pull by CRI on that node fetches the
image from the mirror, i.e. from a seed node that already holds it, instead of from nodeload.

The files are read on the node with one command through the transport's executor; parsing is
pure (:func:`parse_mirrors`). Where the Kubernetes API reported the node's Spegel pod
(``NodeSpec.mirror``), that pod's readiness and registries decide instead: Spegel writes those
files itself, from the same registries, and a node reached through its agent pod has no files
to read.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass

import yaml

from nodeload.errors import NodeError
from nodeload.nodes.spec import ClusterMirror
from nodeload.transports.execs import Executor, run_text
from nodeload.wording import setting

CERTS_DIR = "/etc/containerd/certs.d"
K3S_REGISTRIES = "/etc/rancher/k3s/registries.yaml"
_SEPARATOR = "----nodeload-mirror-file----"
# What to do about an image under a registry the mirror does not serve.


@dataclass(frozen=True)
class Mirror:
    """A mirror a node uses for one registry host."""

    host: str  # the registry host it mirrors (docker.io, ghcr.io...)
    endpoint: str  # where the node pulls from
    source: str  # the file that says so


async def has_mirrors(executor: Executor) -> bool:
    """Whether the node's containerd is configured with any registry mirror at all (cheap: one
    ``ls``), so that a node without one is pushed to at once, as without seeds."""
    script = f"ls {CERTS_DIR}/*/hosts.toml {K3S_REGISTRIES} 2>/dev/null | head -1"
    _, out, _ = await run_text(executor, script)
    return bool(out.strip())


async def mirrored(executor: Executor | None, cluster: ClusterMirror | None = None) -> bool:
    """Whether the node pulls any registry through a mirror: it runs Spegel (``cluster``, from the
    Kubernetes API), or :func:`has_mirrors` says so; False for a node that runs no commands for us
    (no mirror we could know of)."""
    if cluster is not None:
        return True  # ready or not: the pull decides (and says why not)
    try:
        return executor is not None and await has_mirrors(executor)
    except NodeError:
        return False


async def mirror_for(executor: Executor | None, cluster: ClusterMirror | None, host: str) -> Mirror | str:
    """The mirror the node pulls registry ``host`` through, or why there is none (for the report):
    its Spegel pod as the Kubernetes API reported it (``cluster``), else its configuration files."""
    if cluster is not None:
        return cluster_mirror(cluster, host)
    try:
        mirror = await node_mirror(executor, host) if executor is not None else None
    except NodeError:
        mirror = None
    if mirror is not None:
        return mirror
    files = f"{CERTS_DIR}/{host}/hosts.toml, {CERTS_DIR}/_default/hosts.toml, {K3S_REGISTRIES}"
    others = await _mirrored_hosts(executor) if executor is not None else []
    if not others:
        return f"no registry mirror for {host} on this node (read: {files})"
    return (
        f"no registry mirror for {host} on this node (read: {files}); it mirrors {', '.join(others)}: "
        + _rename()
    )


def _rename() -> str:
    """What to do about an image under a registry the mirror does not serve."""
    return (
        f"name the image under one of those with {setting('name')} for the nodes to pull it from their peers"
    )


async def _mirrored_hosts(executor: Executor) -> list[str]:
    """The registry hosts the node's ``certs.d`` names a ``hosts.toml`` for (for messages)."""
    try:
        _, out, _ = await run_text(executor, f"ls -1 {CERTS_DIR}/*/hosts.toml 2>/dev/null")
    except NodeError:
        return []
    prefix = f"{CERTS_DIR}/"
    hosts = [
        line.removeprefix(prefix).rsplit("/", 1)[0] for line in out.splitlines() if line.startswith(prefix)
    ]
    return sorted(h for h in hosts if h and h != "_default")


def cluster_mirror(cluster: ClusterMirror, host: str) -> Mirror | str:
    """Registry ``host`` through the node's Spegel pod, or why not."""
    if not cluster.ready:
        return f"Spegel's pod on this node ({cluster.pod}) is not ready"
    if not cluster.serves(host):
        served = ", ".join(sorted(cluster.registries or ()))
        return f"Spegel ({cluster.pod}) mirrors {served}, not {host}; " + _rename()
    return Mirror(host, f"Spegel ({cluster.pod})", "the Kubernetes API")


async def node_mirror(executor: Executor, host: str) -> Mirror | None:
    """The mirror ``executor``'s node uses for registry ``host``, if its configuration names one."""
    files = [f"{CERTS_DIR}/{host}/hosts.toml", f"{CERTS_DIR}/_default/hosts.toml", K3S_REGISTRIES]
    script = "; ".join(f"echo {_SEPARATOR} {shlex.quote(f)}; cat {shlex.quote(f)} 2>/dev/null" for f in files)
    _, out, _ = await run_text(executor, script)
    contents = {}
    for chunk in out.split(_SEPARATOR)[1:]:
        name, _, body = chunk.strip("\n ").partition("\n")
        contents[name.strip()] = body
    return parse_mirrors(host, contents)


def parse_mirrors(host: str, files: dict[str, str]) -> Mirror | None:
    """The first mirror for ``host`` that the node's files name (``path -> content``)."""
    for path, text in files.items():
        if not text.strip():
            continue
        if path.endswith("registries.yaml"):
            endpoint = _k3s_endpoint(host, text)
        else:
            endpoint = _hosts_toml_endpoint(text)
        if endpoint:
            return Mirror(host, endpoint, path)
    return None


def _hosts_toml_endpoint(text: str) -> str | None:
    """The first ``[host."URL"]`` of a hosts.toml that may pull (containerd tries them in order)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    hosts = doc.get("host")
    if not isinstance(hosts, dict):
        return None
    for url, entry in hosts.items():
        capabilities = entry.get("capabilities", ["pull", "resolve"]) if isinstance(entry, dict) else []
        if "pull" in capabilities:
            return str(url)
    return None


def _k3s_endpoint(host: str, text: str) -> str | None:
    """k3s: ``mirrors: {HOST: {endpoint: [...]}}``; an entry without endpoints is the embedded
    registry (Spegel inside k3s) mirroring that host."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    mirrors = doc.get("mirrors") if isinstance(doc, dict) else None
    if not isinstance(mirrors, dict):
        return None
    key = host if host in mirrors else "*" if "*" in mirrors else None
    if key is None:
        return None
    entry = mirrors[key]  # may be empty: the embedded registry, no endpoints of its own
    endpoints = entry.get("endpoint") if isinstance(entry, dict) else None
    return str(endpoints[0]) if endpoints else "k3s embedded registry"
