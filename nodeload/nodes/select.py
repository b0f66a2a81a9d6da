"""Which nodes a run pushes to: one node source per run, chosen from the options given.

- ``--inventory FILE``: an Ansible inventory (``--all-nodes``, ``--node HOST``, ``--limit``);
- ``--kubeconfig``/``--context``/``-l``/``--all-nodes``: the Nodes of a Kubernetes cluster
  (``--node NAME`` then means a Kubernetes node name);
- otherwise ``--node [USER@]HOST[:PORT]``, each an SSH destination.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nodeload.errors import UsageError
from nodeload.nodes.listed import listed_nodes
from nodeload.nodes.spec import NodeSpec

SourceKind = Literal["listed", "inventory", "kubernetes"]


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
    kubernetes_by_default: bool = False  # ``kubectl nodeload``: --node names Kubernetes nodes

    @property
    def kind(self) -> SourceKind:
        """The node source these options select.

        Raises:
            UsageError: for options of two sources at once, or options no source uses.
        """
        kube_options = [
            flag
            for flag, given in (
                ("--kubeconfig", self.kubeconfig is not None),
                ("--context", self.context is not None),
                ("-l/--selector", self.selector is not None),
                ("--exclude-control-plane", self.exclude_control_plane),
                ("--address-type", self.address_type != "InternalIP"),
            )
            if given
        ]
        if self.inventory is not None:
            if kube_options:
                raise UsageError(f"--inventory cannot be combined with {', '.join(kube_options)}")
            return "inventory"
        if self.limit is not None:
            raise UsageError("--limit selects inventory hosts: use it with --inventory FILE")
        if kube_options or self.all_nodes or self.kubernetes_by_default:
            return "kubernetes"
        return "listed"


def select_nodes(selection: NodeSelection) -> list[NodeSpec]:
    """The nodes ``selection`` names, each once, in a stable order.

    A node that is known to be unusable before connecting (a runtime other than
    containerd, no address of the requested type) is returned with its ``problem``
    set, so that it is reported as failed while the others go on.

    Raises:
        UsageError: for contradictory or missing options.
        NodeSourceError: when the inventory or the cluster cannot be read, or nothing matches.
    """
    kind = selection.kind
    if kind == "inventory":
        assert selection.inventory is not None
        from nodeload.nodes.inventory import load_inventory

        nodes = load_inventory(selection.inventory).select(
            all_nodes=selection.all_nodes, names=selection.names, limit=selection.limit
        )
    elif kind == "kubernetes":
        nodes = _kubernetes_nodes(selection)
    else:
        if selection.all_nodes:
            raise UsageError("--all-nodes needs a cluster: --kubeconfig/--context, or --inventory FILE")
        if not selection.names:
            raise UsageError(
                "no target node: pass --node [USER@]HOST[:PORT] (repeatable), --all-nodes with a "
                "kubeconfig, or --inventory FILE"
            )
        nodes = listed_nodes(selection.names)
    if selection.ssh_user:
        nodes = [n if n.user else dataclasses.replace(n, user=selection.ssh_user) for n in nodes]
    return nodes


def _kubernetes_nodes(selection: NodeSelection) -> list[NodeSpec]:
    # The kubernetes client is slow to import: only runs that use a cluster pay for it.
    from nodeload.nodes.kubernetes import KubeSelection, kube_nodes, node_problem

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
    )
    return [dataclasses.replace(n, problem=node_problem(n, kube)) for n in kube_nodes(kube)]
