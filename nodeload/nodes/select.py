"""Which nodes a run pushes to: one node source per run, chosen from the options given.

- ``--inventory FILE``: an Ansible inventory (``--all-nodes``, ``--node HOST``, ``--limit``);
- ``--kubeconfig``/``--context``/``-l``/``--all-nodes``: the Nodes of a Kubernetes cluster
  (``--node NAME`` then means a Kubernetes node name);
- ``--kind-cluster``/``--k3d-cluster``: the node containers of a local kind or k3d cluster
  (also used for the nodes of a ``kind-NAME``/``k3d-NAME`` kubeconfig context);
- otherwise ``--node [USER@]HOST[:PORT]``, each an SSH destination.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nodeload.addresses import refused, ssh_name_problem
from nodeload.errors import UsageError
from nodeload.nodes.listed import listed_nodes
from nodeload.nodes.spec import DEFAULT_AGENT_NAMESPACE, NodeSpec
from nodeload.wording import setting

log = logging.getLogger(__name__)

SourceKind = Literal["listed", "inventory", "kubernetes", "containers"]


@dataclass(frozen=True)
class NodeSelection:
    """The node options of a run, as the CLI (or a script) gives them."""

    names: tuple[str, ...] = ()
    all_nodes: bool = False
    inventory: Path | None = None
    limit: str | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    selector: str | None = None
    exclude_control_plane: bool = False
    address_type: str = "InternalIP"
    ssh_user: str | None = None
    sudo: bool = False  # every node may use passwordless sudo (an inventory host may by ansible_become)
    kind_cluster: str | None = None
    k3d_cluster: str | None = None
    kubernetes_by_default: bool = False  # ``kubectl nodeload``: --node names Kubernetes nodes
    reach: str = "auto"  # Kubernetes nodes: ssh, agent, or auto (the agent when a node has no SSH address)
    agent_namespace: str = DEFAULT_AGENT_NAMESPACE
    find_mirrors: bool = False  # Kubernetes nodes: look for the cluster's P2P mirror (for --seeds)
    use_ansible: bool = True  # read an inventory with ansible-inventory where ansible-core is installed

    @property
    def kind(self) -> SourceKind:
        """The node source these options select.

        Raises:
            UsageError: for options of two sources at once, or options no source uses.
        """
        kube_options = [
            setting(key)
            for key, given in (
                ("kubeconfig", self.kubeconfig is not None),
                ("context", self.context is not None),
                ("selector", self.selector is not None),
                ("exclude_control_plane", self.exclude_control_plane),
                ("address_type", self.address_type != "InternalIP"),
                ("reach", self.reach != "auto"),
                ("agent_namespace", self.agent_namespace != DEFAULT_AGENT_NAMESPACE),
            )
            if given
        ]
        clusters = [
            setting(key)
            for key, v in (("kind_cluster", self.kind_cluster), ("k3d_cluster", self.k3d_cluster))
            if v
        ]
        inventory = setting("inventory")
        if clusters:
            others = [*clusters[1:], *kube_options, *([inventory] if self.inventory else [])]
            if others:
                raise UsageError(f"{clusters[0]} cannot be combined with {', '.join(others)}")
            return "containers"
        if self.inventory is not None:
            if kube_options:
                raise UsageError(f"{inventory} cannot be combined with {', '.join(kube_options)}")
            return "inventory"
        if self.limit is not None:
            raise UsageError(f"{setting('limit')} selects inventory hosts: use it with {inventory}")
        if kube_options or self.all_nodes or self.kubernetes_by_default:
            return "kubernetes"
        return "listed"


def select_nodes(selection: NodeSelection, notify: Callable[[str], None] | None = None) -> list[NodeSpec]:
    """The nodes ``selection`` names, each once, in a stable order.

    A node that is known to be unusable before connecting (a runtime other than
    containerd, no address of the requested type) is returned with its ``problem``
    set, so that it is reported as failed while the others go on. ``notify`` hears of what
    could not be found out but does not stop the run (default: logged).

    Raises:
        UsageError: for contradictory or missing options.
        NodeSourceError: when the inventory or the cluster cannot be read, or nothing matches.
    """
    kind = selection.kind
    if selection.ssh_user and (why := ssh_name_problem(selection.ssh_user)):
        raise UsageError(f"{setting('ssh_user')}: {refused('user', selection.ssh_user, why)}")
    if kind == "inventory":
        assert selection.inventory is not None
        nodes = inventory_nodes(selection)
    elif kind == "kubernetes":
        nodes = _kubernetes_nodes(selection, notify or log.warning)
    elif kind == "containers":
        nodes = _container_nodes(selection)
    else:
        if selection.all_nodes:
            raise UsageError(
                f"{setting('all_nodes')} needs a cluster: {setting('kubeconfig')}/{setting('context')}, "
                f"or {setting('inventory')}"
            )
        if not selection.names:
            raise UsageError(
                f"no node given: {setting('node')} ([USER@]HOST[:PORT], repeatable), {setting('all_nodes')} "
                f"with a kubeconfig, or {setting('inventory')}"
            )
        nodes = listed_nodes(selection.names)
    if selection.ssh_user:
        nodes = [n if n.user else dataclasses.replace(n, user=selection.ssh_user) for n in nodes]
    if selection.sudo:
        nodes = [dataclasses.replace(n, become=True) for n in nodes]
    return nodes


def inventory_reader(selection: NodeSelection) -> str:
    """Who reads ``selection``'s inventory: ``ansible-inventory`` (ansible-core is installed)
    or ``nodeload`` (its built-in reader, which knows INI and YAML files only)."""
    from nodeload.nodes.inventory.ansible import ansible_tools

    return "ansible-inventory" if selection.use_ansible and ansible_tools() else "nodeload"


def inventory_nodes(selection: NodeSelection) -> list[NodeSpec]:
    """The inventory hosts ``selection`` picks, read by Ansible where it is installed."""
    from nodeload.nodes.inventory import load_inventory
    from nodeload.nodes.inventory.ansible import ansible_tools, select_with_ansible

    assert selection.inventory is not None
    tools = ansible_tools() if selection.use_ansible else None
    if tools is not None:
        return select_with_ansible(
            selection.inventory,
            tools,
            all_nodes=selection.all_nodes,
            names=selection.names,
            limit=selection.limit,
        )
    return load_inventory(selection.inventory).select(
        all_nodes=selection.all_nodes, names=selection.names, limit=selection.limit
    )


def _container_nodes(selection: NodeSelection) -> list[NodeSpec]:
    from nodeload.nodes.containers import k3d_nodes, kind_nodes

    nodes = kind_nodes(selection.kind_cluster) if selection.kind_cluster else []
    nodes += k3d_nodes(selection.k3d_cluster) if selection.k3d_cluster else []
    if selection.names:
        unknown = set(selection.names) - {n.name for n in nodes}
        if unknown:
            known = ", ".join(n.name for n in nodes)
            raise UsageError(f"no node {', '.join(sorted(unknown))} in the cluster (it has {known})")
        nodes = [n for n in nodes if n.name in selection.names]
    elif not selection.all_nodes:
        raise UsageError(
            f"choose the cluster's nodes: {setting('all_nodes')}, or {setting('node')} (by name)"
        )
    return nodes


def _kubernetes_nodes(selection: NodeSelection, notify: Callable[[str], None]) -> list[NodeSpec]:
    # The kubernetes client is slow to import: only runs that use a cluster pay for it.
    from nodeload.nodes.containers import reach_by_docker
    from nodeload.nodes.kubernetes import KubeSelection, context_name, kube_nodes, node_problem

    kube = KubeSelection(
        kubeconfig=selection.kubeconfig,
        context=selection.context,
        # A selector alone takes every node it matches, as with kubectl get nodes -l.
        all_nodes=selection.all_nodes or (selection.selector is not None and not selection.names),
        names=selection.names,
        selector=selection.selector,
        exclude_control_plane=selection.exclude_control_plane,
        address_type=selection.address_type,
        ssh_user=selection.ssh_user,
        reach=selection.reach,
        agent_namespace=selection.agent_namespace,
        find_mirrors=selection.find_mirrors,
    )
    nodes = [dataclasses.replace(n, problem=node_problem(n, kube)) for n in kube_nodes(kube, notify)]
    context = context_name(kube)
    if (
        context.startswith(("kind-", "k3d-")) and selection.reach != "agent"
    ):  # local containers: no SSH needed
        nodes = reach_by_docker(context, nodes)
    return nodes
