"""Nodes from a kubeconfig: the cluster's Node objects, read through the Kubernetes API.

Decisions worth knowing when calling this module:

* **Which kubeconfig.** ``KubeSelection.kubeconfig`` if given (one file, which must
  exist); else every file named in ``$KUBECONFIG`` (``:``-separated), merged as kubectl
  merges them: files that do not exist are skipped, the first file to define a context,
  cluster or user wins, and the first file that sets ``current-context`` decides it;
  else ``~/.kube/config``. ``$KUBECONFIG`` is read at call time (the client library
  reads it once, at import). An entry's relative paths are read against its own file,
  and only the credentials kubectl would send are sent (:mod:`.kube_credentials`).
* **Unusable nodes are returned, not dropped.** A node whose runtime is not containerd
  comes back with its ``runtime`` set, and one without an address of the requested type
  comes back with ``address=None``; :func:`node_problem` (or :func:`unsupported_runtime`
  and :func:`missing_address`) says why such a node cannot be pushed to, so the caller
  reports that node as failed while the others go on.
* **The cluster's mirror, when asked** (``find_mirrors``, several nodes): Spegel's pods are
  listed in every namespace and each node's is set on its spec (:mod:`nodeload.nodes.spegel`).
  A user who may not list pods there gets a warning, not an error: the nodes' own mirror
  configuration is read instead.
* **Everything a user can act on is a NodeSourceError** (missing or malformed kubeconfig,
  unknown context, unreachable server, rejected credentials, missing RBAC permission,
  nodes that do not exist): the message names the file, context, user or server at fault.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as kube_client
from kubernetes.config import kube_config

from nodeload.addresses import dns_name_problem, ip_problem, refused
from nodeload.errors import NodeSourceError, UsageError
from nodeload.jsondoc import mapping
from nodeload.nodes.kube_credentials import credentials, resolve_paths
from nodeload.nodes.spec import DEFAULT_AGENT_NAMESPACE, ClusterMirror, KubeAccess, NodeSpec
from nodeload.nodes.spegel import SPEGEL_SELECTOR, spegel_mirrors
from nodeload.platforms import Platform
from nodeload.wording import setting

log = logging.getLogger(__name__)

# How a node is addressed over SSH: one of the address types kubelet reports, or the
# node's own name (useful when ~/.ssh/config has an alias per node).
ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname", "name")
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
# k3s and rke2 run their own containerd with the socket under /run/k3s.
K3S_SOCKET = "/run/k3s/containerd/containerd.sock"
_K3S_MARKERS = ("k3s", "rke2")
# Seconds to connect, then seconds of silence while reading: an unreachable server must
# fail the run promptly rather than after the OS's TCP timeout.
REQUEST_TIMEOUT = 15.0
_DEFAULT_KUBECONFIG = "~/.kube/config"
# How many node names an "unknown node" message lists before abbreviating.
_LISTED_NAMES = 20


@dataclass(frozen=True)
class KubeSelection:
    """Which kubeconfig, context and nodes to use, and how to reach the nodes.

    Attributes:
        kubeconfig: The kubeconfig file. None: ``$KUBECONFIG`` (merged), else ``~/.kube/config``.
        context: The kubeconfig context. None: its ``current-context``.
        all_nodes: Take every node that the selector and control-plane filter leave.
        names: Take these nodes, by Kubernetes node name.
        selector: A label selector, evaluated by the API server.
        exclude_control_plane: Drop nodes labelled as control-plane (or legacy master) nodes.
        address_type: ``InternalIP``, ``ExternalIP``, ``Hostname``, or ``name`` for the node name.
        ssh_user: The SSH login for every node (None: the ssh config's).
        reach: ``ssh``; ``agent`` (through each node's nodeload-agent pod and the API server); or
            ``auto``: SSH, and the agent for nodes that report no address of ``address_type``.
        agent_namespace: Where the nodeload-agent pods are.
        find_mirrors: Look for the cluster's peer-to-peer mirror (Spegel's pods) when several
            nodes are chosen, and say on each node whether it has one (``NodeSpec.mirror``).
    """

    kubeconfig: Path | None = None
    context: str | None = None
    all_nodes: bool = False
    names: tuple[str, ...] = ()
    selector: str | None = None
    exclude_control_plane: bool = False
    address_type: str = "InternalIP"
    ssh_user: str | None = None
    reach: str = "auto"
    agent_namespace: str = DEFAULT_AGENT_NAMESPACE
    find_mirrors: bool = False


REACHES = ("auto", "ssh", "agent")


@dataclass(frozen=True)
class _Kubeconfig:
    """The kubeconfig files in use, with the named entries merged kubectl's way."""

    files: tuple[Path, ...]
    contexts: Mapping[str, Mapping[str, Any]]
    clusters: Mapping[str, Mapping[str, Any]]
    users: Mapping[str, Mapping[str, Any]]
    current: str | None

    def __str__(self) -> str:
        if len(self.files) == 1:
            return f"kubeconfig {self.files[0]}"
        return "kubeconfig files " + ", ".join(str(f) for f in self.files)


@dataclass(frozen=True)
class _InUse:
    """The context in use and what error messages say about it."""

    kubeconfig: _Kubeconfig
    context: str
    user: str
    server: str


def kube_nodes(selection: KubeSelection, notify: Callable[[str], None] = log.warning) -> list[NodeSpec]:
    """The nodes ``selection`` picks, in the order named (or the API's order).

    ``notify`` hears why the cluster's mirror could not be looked for (the run goes on without).

    Raises:
        NodeSourceError: the nodes cannot be determined; the message says what to fix.
        UsageError: ``selection.address_type`` is not one of :data:`ADDRESS_TYPES`.
    """
    _check_selection(selection)
    in_use = _context_in_use(selection)
    listed = _list_nodes(in_use, selection.selector)
    kept = [n for n in listed if not (selection.exclude_control_plane and _is_control_plane(n))]
    chosen = _pick_by_name(kept, listed, selection, in_use) if selection.names else kept
    if not chosen:
        raise NodeSourceError(_no_nodes_text(selection, in_use))
    access = KubeAccess(
        in_use.kubeconfig.files, in_use.context, in_use.user, in_use.server, selection.agent_namespace
    )
    specs = [_reach(_node_spec(node, selection), selection, access) for node in chosen]
    if selection.find_mirrors and len(specs) > 1:
        mirrors = _cluster_mirrors(in_use, notify)
        specs = [dataclasses.replace(spec, mirror=mirrors.get(spec.name)) for spec in specs]
    return specs


def _cluster_mirrors(in_use: _InUse, notify: Callable[[str], None]) -> dict[str, ClusterMirror]:
    """The Spegel pod on each node that runs one; none when the API will not say."""
    try:
        return spegel_mirrors(_list_pods(in_use, SPEGEL_SELECTOR))
    except NodeSourceError as e:
        notify(
            f"warning: cannot look for Spegel through the Kubernetes API: {e}; "
            "whether a node pulls from its peers is read from its own mirror configuration instead"
        )
        return {}


def _reach(spec: NodeSpec, selection: KubeSelection, access: KubeAccess) -> NodeSpec:
    """Through the node's agent pod when asked, or (``auto``) when it has no SSH address."""
    if selection.reach == "agent":
        return dataclasses.replace(spec, reach="agent", kube=access)
    if selection.reach == "auto" and spec.address is None:
        why = f"node {spec.name} reports no {selection.address_type} address (for SSH)"
        return dataclasses.replace(spec, reach="agent", kube=dataclasses.replace(access, instead_of_ssh=why))
    return spec


def configuration(access: KubeAccess) -> kube_client.Configuration:
    """A client configuration for ``access``'s context (the agent transport's API client).

    Raises:
        NodeSourceError: the kubeconfig cannot be loaded any more.
    """
    return _configuration(_in_use(_read_kubeconfig(access.kubeconfig), access.context))


def selection_configuration(selection: KubeSelection) -> kube_client.Configuration:
    """A client configuration for the context ``selection`` uses (``push --restart``'s calls).

    Raises:
        NodeSourceError: the kubeconfig is missing or malformed, or has no such context.
    """
    return _configuration(_context_in_use(selection))


def context_name(selection: KubeSelection) -> str:
    """The kubeconfig context ``selection`` uses: its own, else the current context.

    Raises:
        NodeSourceError: the kubeconfig is missing or malformed, or has no such context.
    """
    return _choose_context(_load_kubeconfig(selection), selection.context)


def unsupported_runtime(spec: NodeSpec) -> str | None:
    """Why nodeload cannot push to ``spec``'s container runtime, or None if it can.

    A node whose runtime is unknown passes: the push itself finds out.
    """
    if not spec.runtime or spec.runtime.startswith("containerd://"):
        return None
    return f"node {spec.name} runs {spec.runtime}, not containerd; nodeload writes into containerd only"


def missing_address(spec: NodeSpec, selection: KubeSelection) -> str | None:
    """Why ``spec`` has no SSH address (kubelet reports none of the requested type), or None."""
    if spec.address is not None or spec.reach != "ssh":
        return None
    others = ", ".join(t for t in ADDRESS_TYPES if t != selection.address_type)
    return (
        f"node {spec.name} reports no {selection.address_type} address; "
        f"choose another address type ({others}; 'name' uses the node name, e.g. an ~/.ssh/config alias)"
    )


def invalid_address(spec: NodeSpec, selection: KubeSelection) -> str | None:
    """Why ``spec``'s SSH address is not one (its kubelet wrote something else), or None.

    The API server does not check that an address is an IP or a host name, and whoever can
    write the node's status (its kubelet) chooses it: anything else is refused, never handed
    to ssh, whose config may put it in a command (``ProxyCommand ... %h``).
    """
    if spec.address is None or spec.reach != "ssh":
        return None
    if selection.address_type in ("InternalIP", "ExternalIP"):
        why, field = ip_problem(spec.address), f"its status.addresses {selection.address_type}"
    else:
        field = "its name" if selection.address_type == "name" else "its status.addresses Hostname"
        why = dns_name_problem(spec.address)
    return f"node {spec.name}: {refused(field, spec.address, why)}" if why else None


def node_problem(spec: NodeSpec, selection: KubeSelection) -> str | None:
    """Why nodeload cannot push to ``spec`` at all, or None: the node's failed-result message."""
    return unsupported_runtime(spec) or missing_address(spec, selection) or invalid_address(spec, selection)


# -- selection ---------------------------------------------------------------------------


def _check_selection(selection: KubeSelection) -> None:
    """Reject a selection that cannot mean anything before touching files or the network."""
    if selection.reach not in REACHES:
        raise UsageError(f"reach must be one of {', '.join(REACHES)}, not {selection.reach!r}")
    if selection.address_type not in ADDRESS_TYPES:
        raise UsageError(
            f"unknown address type {selection.address_type!r}: use one of {', '.join(ADDRESS_TYPES)}"
        )
    if selection.all_nodes and selection.names:
        raise NodeSourceError(
            f"choose nodes with either {setting('all_nodes')} or {setting('node')}, not both"
        )
    if not selection.all_nodes and not selection.names:
        # Pushing to every node of a cluster must be asked for, never a default.
        raise NodeSourceError(
            f"say which Kubernetes nodes to push to: {setting('all_nodes')} or {setting('node')} (by name)"
        )


def _is_control_plane(node: Mapping[str, Any]) -> bool:
    labels = _labels(node)
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def _pick_by_name(
    kept: list[Mapping[str, Any]],
    listed: list[Mapping[str, Any]],
    selection: KubeSelection,
    in_use: _InUse,
) -> list[Mapping[str, Any]]:
    """The named nodes among ``kept``, in the order named; any missing one is an error."""
    by_name = {_name(n): n for n in kept}
    wanted = list(dict.fromkeys(selection.names))  # drop repeats, keep order
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise NodeSourceError(_missing_names_text(missing, kept, listed, selection, in_use))
    return [by_name[name] for name in wanted]


def _missing_names_text(
    missing: list[str],
    kept: list[Mapping[str, Any]],
    listed: list[Mapping[str, Any]],
    selection: KubeSelection,
    in_use: _InUse,
) -> str:
    # A named control-plane node exists but was filtered out: saying "unknown" would mislead.
    control_plane = {_name(n) for n in listed} - {_name(n) for n in kept}
    dropped = [name for name in missing if name in control_plane]
    unknown = [name for name in missing if name not in control_plane]
    parts = []
    if unknown:
        filters = _filters_text(selection, control_plane=False)
        where = f"context {in_use.context!r}" + (f" matching {filters}" if filters else "")
        parts.append(f"no node named {', '.join(unknown)} in {where} ({_names_text(kept)})")
    if dropped:
        parts.append(f"{', '.join(dropped)}: control-plane node(s), excluded as asked")
    return "; ".join(parts)


def _names_text(nodes: list[Mapping[str, Any]]) -> str:
    names = sorted(_name(n) for n in nodes)
    if not names:
        return "none there"
    shown = ", ".join(names[:_LISTED_NAMES])
    more = f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else ""
    return f"nodes there: {shown}{more}"


def _no_nodes_text(selection: KubeSelection, in_use: _InUse) -> str:
    where = f"context {in_use.context!r} (API server {in_use.server})"
    filters = _filters_text(selection)
    return f"no nodes in {where} match {filters}" if filters else f"the cluster of {where} reports no nodes"


def _filters_text(selection: KubeSelection, *, control_plane: bool = True) -> str:
    """The filters in effect, echoed so that an empty answer can be understood."""
    filters = []
    if selection.selector:
        filters.append(f"label selector {selection.selector!r}")
    if control_plane and selection.exclude_control_plane:
        filters.append("control-plane nodes excluded")
    return ", ".join(filters)


# -- Node objects to NodeSpecs -------------------------------------------------------------


def _node_spec(node: Mapping[str, Any], selection: KubeSelection) -> NodeSpec:
    info = mapping(mapping(node.get("status")).get("nodeInfo"))
    runtime = str(info.get("containerRuntimeVersion") or "") or None
    return NodeSpec(
        name=_name(node),
        address=_address(node, selection.address_type),
        user=selection.ssh_user,
        platform=_platform(info),
        runtime=runtime,
        sockets=_sockets(runtime, str(info.get("kubeletVersion") or "")),
    )


def _address(node: Mapping[str, Any], address_type: str) -> str | None:
    """The node's first address of ``address_type`` (dual-stack nodes list one per family)."""
    if address_type == "name":
        return _name(node)
    for entry in mapping(node.get("status")).get("addresses") or ():
        if isinstance(entry, Mapping) and entry.get("type") == address_type and entry.get("address"):
            return str(entry["address"])
    return None


def _platform(info: Mapping[str, Any]) -> Platform | None:
    os_name, arch = info.get("operatingSystem"), info.get("architecture")
    if not os_name or not arch:
        return None
    return Platform(os=str(os_name), architecture=str(arch)).normalized()


def _sockets(runtime: str | None, kubelet_version: str) -> tuple[str, ...]:
    """k3s's socket first for k3s and rke2 nodes: their containerd is not at the usual path.

    Their runtime reads like ``containerd://1.7.11-k3s2`` and their kubelet like
    ``v1.28.5+k3s1`` or ``v1.28.5+rke2r1``; either betrays the distribution.
    """
    if not runtime or not runtime.startswith("containerd://"):
        return ()
    if any(marker in runtime or marker in kubelet_version for marker in _K3S_MARKERS):
        return (K3S_SOCKET,)
    return ()


def _name(node: Mapping[str, Any]) -> str:
    return str(mapping(node.get("metadata")).get("name") or "")


def _labels(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(mapping(node.get("metadata")).get("labels"))


# -- kubeconfig ----------------------------------------------------------------------------


def _kubeconfig_files(selection: KubeSelection) -> tuple[Path, ...]:
    """The kubeconfig files to read, in merge order (see the module docstring)."""
    if selection.kubeconfig is not None:
        path = selection.kubeconfig.expanduser()
        if not path.exists():
            raise NodeSourceError(f"kubeconfig {path} does not exist")
        return (path,)
    listed = os.environ.get("KUBECONFIG", "").split(kube_config.ENV_KUBECONFIG_PATH_SEPARATOR)
    named = [Path(p).expanduser() for p in listed if p]
    if named:
        existing = tuple(p for p in named if p.exists())
        if not existing:
            raise NodeSourceError(
                f"no kubeconfig: none of the files $KUBECONFIG names exists ({', '.join(map(str, named))})"
            )
        return existing
    default = Path(_DEFAULT_KUBECONFIG).expanduser()
    if not default.exists():
        raise NodeSourceError(
            f"no kubeconfig: {default} does not exist and $KUBECONFIG is not set; pass the kubeconfig to use"
        )
    return (default,)


def _read_kubeconfig_file(path: Path) -> Mapping[str, Any]:
    """One kubeconfig file, checked as far as nodeload reads it itself."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NodeSourceError(f"cannot read kubeconfig {path}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NodeSourceError(f"kubeconfig {path} is not valid YAML: {_yaml_problem(e)}") from e
    if data is None:  # empty, or comments only: kubectl reads it as an empty config
        return {}
    if not isinstance(data, Mapping):
        found = type(data).__name__
        raise NodeSourceError(f"kubeconfig {path} is malformed: expected a mapping, found {found}")
    for key in ("contexts", "clusters", "users"):
        entries = data.get(key) or []
        if not isinstance(entries, list) or not all(_is_named_entry(e) for e in entries):
            raise NodeSourceError(f"kubeconfig {path} is malformed: {key!r} must be a list of named entries")
        names = [entry["name"] for entry in entries]
        if len(set(names)) != len(names):  # kubectl refuses the whole file
            twice = sorted({name for name in names if names.count(name) > 1})
            raise NodeSourceError(
                f"kubeconfig {path} is malformed: {key} lists {', '.join(twice)} more than once"
            )
    return data


def _is_named_entry(entry: object) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("name"), str)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(error)


def _load_kubeconfig(selection: KubeSelection) -> _Kubeconfig:
    return _read_kubeconfig(_kubeconfig_files(selection))


def _read_kubeconfig(files: tuple[Path, ...]) -> _Kubeconfig:
    # Each file's relative paths against its own directory, before entries from several
    # files are mixed (see nodeload.nodes.kube_credentials).
    configs = [resolve_paths(_read_kubeconfig_file(path), path) for path in files]
    # kubectl: the first file that sets current-context decides it (the client library
    # lets the last one win, hence choosing the context here and passing it explicitly).
    current = next((str(c["current-context"]) for c in configs if c.get("current-context")), None)
    return _Kubeconfig(
        files=files,
        contexts=_merge_named(configs, "contexts", "context"),
        clusters=_merge_named(configs, "clusters", "cluster"),
        users=_merge_named(configs, "users", "user"),
        current=current,
    )


def _merge_named(configs: Iterable[Mapping[str, Any]], key: str, inner: str) -> dict[str, Mapping[str, Any]]:
    """Entries of list ``key`` by name, the first file's entry winning (as kubectl merges)."""
    merged: dict[str, Mapping[str, Any]] = {}
    for config in configs:
        for entry in config.get(key) or []:
            merged.setdefault(entry["name"], mapping(entry.get(inner)))
    return merged


def _choose_context(kubeconfig: _Kubeconfig, wanted: str | None) -> str:
    known = ", ".join(sorted(kubeconfig.contexts)) or "none: it defines no contexts"
    if wanted is None:
        if kubeconfig.current is None:
            raise NodeSourceError(f"{kubeconfig} sets no current-context; choose a context (known: {known})")
        wanted = kubeconfig.current
    if wanted not in kubeconfig.contexts:
        raise NodeSourceError(f"context {wanted!r} is not in {kubeconfig}; known contexts: {known}")
    return wanted


def _context_in_use(selection: KubeSelection) -> _InUse:
    return _in_use(_load_kubeconfig(selection), selection.context)


def _in_use(kubeconfig: _Kubeconfig, wanted: str | None) -> _InUse:
    context = _choose_context(kubeconfig, wanted)
    entry = kubeconfig.contexts[context]
    cluster = str(entry.get("cluster") or "")
    server = mapping(kubeconfig.clusters.get(cluster)).get("server")
    if not server:
        # The client library would quietly fall back to http://localhost.
        raise NodeSourceError(
            f"{kubeconfig} is malformed: context {context!r} names cluster {cluster!r}, "
            "which is not defined or has no server"
        )
    _refuse_conflicts(kubeconfig, context, cluster, str(entry.get("user") or ""))
    return _InUse(kubeconfig, context, str(entry.get("user") or "(none)"), str(server))


# A file and inline data for the same thing: kubectl refuses the context rather than pick one.
_CONFLICTS = (
    ("clusters", "certificate-authority", "certificate-authority-data"),
    ("users", "client-certificate", "client-certificate-data"),
    ("users", "client-key", "client-key-data"),
)


def _refuse_conflicts(kubeconfig: _Kubeconfig, context: str, cluster: str, user: str) -> None:
    """Refuse what kubectl's validation of the context in use refuses (client-go's
    ``validateClusterInfo`` and ``validateAuthInfo``), rather than guess which setting counts."""
    where = f"{kubeconfig}, context {context!r}"
    entries = {
        "clusters": (cluster, mapping(kubeconfig.clusters.get(cluster))),
        "users": (user, mapping(kubeconfig.users.get(user))),
    }
    for kind, path_key, data_key in _CONFLICTS:
        name, entry = entries[kind]
        if entry.get(path_key) and entry.get(data_key):
            raise NodeSourceError(
                f"{where}: {data_key} and {path_key} are both set for {kind[:-1]} {name!r}; "
                "kubectl refuses that too: keep one"
            )
    why = _cluster_problem(entries["clusters"][1]) or _user_problem(entries["users"][1])
    if why:
        raise NodeSourceError(f"{where}: {why} (kubectl refuses that too)")


def _cluster_problem(cluster: Mapping[str, Any]) -> str | None:
    ca = cluster.get("certificate-authority")
    if cluster.get("insecure-skip-tls-verify") and (ca or cluster.get("certificate-authority-data")):
        return "insecure-skip-tls-verify is set together with a certificate authority"
    if ca and not os.access(str(ca), os.R_OK):
        return f"cannot read certificate-authority {ca}"
    return None


def _user_problem(user: Mapping[str, Any]) -> str | None:
    methods = [
        method
        for method, keys in (("token", ("token", "tokenFile")), ("basic auth", ("username", "password")))
        if any(user.get(key) for key in keys)
    ]
    if len(methods) > 1:
        return f"the user has more than one authentication method ({', '.join(methods)})"
    has_certificate = user.get("client-certificate") or user.get("client-certificate-data")
    if has_certificate and not (user.get("client-key") or user.get("client-key-data")):
        return "the user has a client certificate without its client-key"
    if user.get("exec") and user.get("auth-provider"):
        return "the user has both an exec plugin and an auth-provider"
    for key in ("client-certificate", "client-key"):
        if user.get(key) and not os.access(str(user[key]), os.R_OK):
            return f"cannot read {key} {user[key]}"
    return None


# -- the API -------------------------------------------------------------------------------


def _configuration(in_use: _InUse) -> kube_client.Configuration:
    """A client configuration of its own: the library's global default stays untouched."""
    configuration = kube_client.Configuration()
    config_dict = _client_kubeconfig(in_use)
    try:
        kube_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            config_dict,
            context=in_use.context,
            client_configuration=configuration,
            # Never rewrite the user's kubeconfig (the library would, after refreshing a token).
            persist_config=False,
        )
    except Exception as e:
        # The loader reports a bad entry with whatever its parsing trips over (ConfigException,
        # KeyError, TypeError, a missing certificate file...): all mean "fix the kubeconfig".
        raise NodeSourceError(f"{in_use.kubeconfig}, context {in_use.context!r}: {e}") from e
    # One attempt: a list is cheap to re-run, and retries multiply the timeout.
    configuration.retries = 0
    return configuration


def _client_kubeconfig(in_use: _InUse) -> dict[str, Any]:
    """``in_use``'s context alone, for the client library, with the credentials kubectl would send.

    Merged and resolved here, not by the library: it resolves a user's relative paths against
    the file of the context's cluster, and its credential handling differs from kubectl's
    (:mod:`nodeload.nodes.kube_credentials`).

    Raises:
        NodeSourceError: the user's credentials cannot be had (token file, exec plugin).
    """
    kubeconfig, name = in_use.kubeconfig, in_use.context
    context = dict(kubeconfig.contexts[name])
    cluster_name = str(context.get("cluster"))
    cluster = kubeconfig.clusters[cluster_name]
    user_name = context.pop("user", None)
    user = kubeconfig.users.get(str(user_name)) if user_name else None
    where = f"{kubeconfig}, context {name!r}, user {user_name!r}"
    sent = credentials(user, cluster, where) if user is not None else None
    if sent is not None:
        context["user"] = user_name
    return {
        "current-context": name,
        "contexts": [{"name": name, "context": context}],
        "clusters": [{"name": cluster_name, "cluster": dict(cluster)}],
        "users": [{"name": user_name, "user": sent}] if sent is not None else [],
    }


def _list_nodes(in_use: _InUse, selector: str | None) -> list[Mapping[str, Any]]:
    """The Node objects the server lists for ``selector``, as plain JSON mappings."""
    return _list(in_use, "nodes", lambda api, **kw: api.list_node(**kw), selector)


def _list_pods(in_use: _InUse, selector: str) -> list[Mapping[str, Any]]:
    """The pods of every namespace that match ``selector``, as plain JSON mappings."""
    return _list(in_use, "pods", lambda api, **kw: api.list_pod_for_all_namespaces(**kw), selector)


def _list(
    in_use: _InUse, resource: str, call: Callable[..., Any], selector: str | None
) -> list[Mapping[str, Any]]:
    """The objects of a cluster-scoped list ``call`` for ``selector``.

    The raw JSON, not the generated models: those insist on every field the schema marks
    required, so one object with a sparse status would fail the whole listing.
    """
    configuration = _configuration(in_use)
    try:
        with kube_client.ApiClient(configuration) as api_client:
            # Typed as the list model, but without preloading it is urllib3's response.
            response = call(
                kube_client.CoreV1Api(api_client),
                label_selector=selector or None,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT, REQUEST_TIMEOUT),
            )
            body = response.data
    except kube_client.ApiException as e:
        raise _api_error(e, in_use, resource) from e
    except urllib3.exceptions.HTTPError as e:
        raise _unreachable(in_use, _network_problem(e)) from e
    try:
        items = json.loads(body).get("items")
    except (ValueError, AttributeError) as e:
        raise NodeSourceError(f"the API server {in_use.server} sent a malformed {resource} list") from e
    return [item for item in items or [] if isinstance(item, Mapping)]


def _api_error(error: kube_client.ApiException, in_use: _InUse, resource: str = "nodes") -> NodeSourceError:
    """The user-facing message for an HTTP error status from the API server."""
    status, message = error.status, status_message(error)
    if status == 401 and not in_use.server.startswith("https://"):
        return NodeSourceError(
            f"the API server {in_use.server} answered 401 {message}: like kubectl, nodeload sends "
            f"no credentials (those of user {in_use.user!r}, context {in_use.context!r}) to a server "
            "that is not https://"
        )
    if status == 401:
        return NodeSourceError(
            f"the API server {in_use.server} rejected the credentials of user {in_use.user!r} "
            f"in {in_use.kubeconfig} (context {in_use.context!r}): {message}; "
            "they may be wrong or expired"
        )
    if status == 403:
        return NodeSourceError(
            f"user {in_use.user!r} (context {in_use.context!r}) may not list {resource}: "
            f"it needs the `list` verb on `{resource}` at cluster scope (a ClusterRole and binding); "
            f"the API server said: {message}"
        )
    if not status:
        # The REST layer reports TLS failures as an ApiException without a status.
        return _unreachable(in_use, message)
    return NodeSourceError(f"the API server {in_use.server} answered {status} {error.reason}: {message}")


def status_message(error: kube_client.ApiException) -> str:
    """The ``message`` of the Status object the server sent, else whatever it said."""
    body = error.body or ""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    text = str(message or body or error.reason or "no details").strip()
    return " ".join(text.split())  # one line: TLS reasons come with newlines


def _unreachable(in_use: _InUse, problem: str) -> NodeSourceError:
    return NodeSourceError(
        f"cannot reach the Kubernetes API server {in_use.server} (context {in_use.context!r}): {problem}"
    )


def _network_problem(error: BaseException) -> str:
    """The root cause of a urllib3 failure, without urllib3's wrapping."""
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    # A refused connection is a NewConnectionError, which urllib3 derives from its
    # timeout error for compatibility: not a timeout.
    timed_out = not isinstance(error, urllib3.exceptions.NewConnectionError)
    if timed_out and isinstance(error, urllib3.exceptions.TimeoutError):
        return f"no answer within {REQUEST_TIMEOUT:g} s"
    if isinstance(error, urllib3.exceptions.SSLError):
        return f"TLS failed: {error}"
    cause: BaseException | None = error
    while cause is not None:
        # The socket error carries the plain reason ("Connection refused").
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return str(error)
