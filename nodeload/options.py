"""How to push, grouped by the layer each setting belongs to: where images come from
(:class:`~nodeload.sources.base.SourceOptions`), how nodes are reached over SSH
(:class:`~nodeload.transports.ssh_connect.SSHOptions`), what is written on them
(:class:`StoreOptions`) and how the nodes of a run are worked on (:class:`FanoutOptions`).

Example:
    >>> PushOptions(store=StoreOptions(name="example.com/app:dev"), fanout=FanoutOptions(parallel=4))
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from nodeload.containerd.client import DEFAULT_TIMEOUT
from nodeload.errors import UsageError
from nodeload.fanout import DEFAULT_PARALLEL, DEFAULT_RETRIES
from nodeload.nodes.listed import parse_node
from nodeload.platforms import Platform
from nodeload.sources.base import Export, SourceOptions
from nodeload.stores.base import CRI_NAMESPACE
from nodeload.transports.ssh_connect import SSHOptions
from nodeload.wording import setting

# What is written on the nodes: their containerd, or their Docker Engine.
StoreKind = Literal["containerd", "docker"]

# containerd's own rule for namespace names.
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


@dataclass(frozen=True)
class StoreOptions:
    """What is written on each node, and where.

    Attributes:
        kind: ``containerd`` (kubelet's, nerdctl's...) or ``docker`` (the node's Docker Engine,
            through its socket; its containerd image store through ``moby``).
        namespace: containerd namespace: ``k8s.io`` (kubelet/CRI), ``default`` (nerdctl),
            ``moby`` (Docker's containerd image store). A node may set its own.
        name: The image name to create on the nodes (one image only); default: the source's own.
        platform: Pick this platform of a multi-platform image (default: each node's own).
        socket: Use only this socket on every node (default: the node's hints, then the usual
            places).
        snapshotter: Unpack into this snapshotter (default: CRI's, else overlayfs).
        unpack: Unpack layers (False: store the content only).
        timeout: Seconds containerd may leave a call unanswered or an upload without progress.
    """

    kind: StoreKind = "containerd"
    namespace: str = CRI_NAMESPACE
    name: str | None = None
    platform: Platform | None = None
    socket: str | None = None
    snapshotter: str | None = None
    unpack: bool = True
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class FanoutOptions:
    """How the nodes of a run are worked on.

    Attributes:
        parallel: Nodes worked on at once.
        retries: Reconnections per node when its session is lost mid-push (the SSH connection
            dropped, containerd restarted); each resumes where the last stopped.
        seeds: Push to this many seed nodes (of the nodes with a registry mirror, those with
            the least of the images to receive), and have every other node whose containerd
            pulls through a mirror (Spegel, k3s's embedded registry) pull from its peers
            instead; 0: push to every node. None: 1 seed when there are several nodes (nodes
            without a mirror are pushed to at once, as without seeds). Given explicitly, a
            Docker-engine image is exported with ``docker save`` (the engine's own push asks
            every node at once).
        mirror_check: Read each node's mirror configuration before pulling (False: trust it).
    """

    parallel: int = DEFAULT_PARALLEL
    retries: int = DEFAULT_RETRIES
    seeds: int | None = None
    mirror_check: bool = True


@dataclass(frozen=True)
class PushOptions:
    """How to push: the same for every image and node of a run.

    Attributes:
        source: Where images come from (a registry's TLS, a local containerd, how a Docker-engine
            image leaves the engine).
        ssh: How SSH nodes are reached.
        store: What is written on the nodes.
        fanout: How the nodes are worked on.
    """

    source: SourceOptions = field(default_factory=SourceOptions)
    ssh: SSHOptions = field(default_factory=SSHOptions)
    store: StoreOptions = field(default_factory=StoreOptions)
    fanout: FanoutOptions = field(default_factory=FanoutOptions)

    @classmethod
    def of(cls, **settings: Any) -> PushOptions:
        """Options from settings named as the fields of the groups (``name=``, ``export=``,
        ``parallel=``, ``ssh=``...), for short calls and the pytest plugin. The flat names of
        0.1 (``containerd_socket``, ``target``, ``source_tls_verify``, ``source_socket``,
        ``source_namespace``) are still understood.

        Raises:
            UsageError: a setting no group has.
        """
        groups: dict[str, dict[str, Any]] = {"source": {}, "store": {}, "fanout": {}}
        whole: dict[str, Any] = {}
        for key, value in settings.items():
            key = _FORMER_NAMES.get(key, key)
            if key in ("source", "ssh", "store", "fanout"):
                whole[key] = value
                continue
            owner = next((g for g, kind in _GROUPS.items() if key in _fields(kind)), None)
            if owner is None:
                raise UsageError(f"no push option is called {key!r}")
            groups[owner][key] = value
        made = {g: dataclasses.replace(whole.get(g, _GROUPS[g]()), **values) for g, values in groups.items()}
        return cls(ssh=whole.get("ssh", SSHOptions()), **made)

    def check(self, images: int) -> None:
        """Raise UsageError for settings that cannot work, for a run of ``images`` images."""
        store, fanout, source = self.store, self.fanout, self.source
        if store.kind not in get_args(StoreKind):
            raise UsageError(f"{setting('store')} must be containerd or docker, not {store.kind!r}")
        if not _NAMESPACE.fullmatch(store.namespace):
            raise UsageError(
                f"invalid {setting('namespace')} {store.namespace!r}: containerd namespaces are letters and "
                "digits separated by . _ or - (k8s.io, default, moby)"
            )
        if store.name and images > 1:
            raise UsageError(f"{setting('name')} names one image: it cannot be given when pushing several")
        if fanout.parallel < 1:
            raise UsageError(f"{setting('parallel')} must be at least 1, not {fanout.parallel}")
        if fanout.retries < 0:
            raise UsageError(f"{setting('retries')} must be 0 or more, not {fanout.retries}")
        if fanout.seeds is not None and fanout.seeds < 0:
            raise UsageError(f"{setting('seeds')} must be 0 or more, not {fanout.seeds}")
        if source.export not in get_args(Export):
            raise UsageError(f"{setting('export')} must be auto, save or push, not {source.export!r}")
        if store.kind == "docker" and source.export == "push":
            raise UsageError(
                f"the engine's docker push writes into containerd: {setting('store', 'docker')} takes "
                f"{setting('export', 'save')}"
            )
        for hop in (self.ssh.jump or "").split(","):
            if hop.strip():
                parse_node(hop.strip().removeprefix("ssh://"))  # a UsageError names what is wrong


# Flat PushOptions fields of 0.1 and the group field each became.
_FORMER_NAMES = {
    "containerd_socket": "socket",
    "target": "kind",
    "source_tls_verify": "tls_verify",
    "source_socket": "containerd_address",
    "source_namespace": "containerd_namespace",
}

_GROUPS: dict[str, type[Any]] = {"source": SourceOptions, "store": StoreOptions, "fanout": FanoutOptions}


def _fields(kind: type[Any]) -> Sequence[str]:
    return [f.name for f in dataclasses.fields(kind)]
