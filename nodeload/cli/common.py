"""What the commands share: nodes and SSH options from the arguments, notices on stderr."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from nodeload.nodes.select import NodeSelection
    from nodeload.nodes.spec import NodeSpec
    from nodeload.transports.ssh import SSHOptions


def selected_nodes(args: argparse.Namespace, err: Console) -> list[NodeSpec]:
    """The nodes the selection arguments name (what could not be found out is told on ``err``)."""
    from nodeload.nodes.select import select_nodes

    return select_nodes(node_selection(args), notifier(err))


def node_selection(args: argparse.Namespace) -> NodeSelection:
    """The selection arguments as the library takes them."""
    from nodeload.nodes.select import NodeSelection

    return NodeSelection(
        names=tuple(args.node),
        all_nodes=args.all_nodes,
        inventory=args.inventory,
        limit=args.limit,
        kubeconfig=args.kubeconfig,
        context=args.context,
        selector=args.selector,
        exclude_control_plane=args.exclude_control_plane,
        address_type=args.address_type,
        ssh_user=args.ssh_user,
        sudo=args.sudo,
        kind_cluster=args.kind_cluster,
        k3d_cluster=args.k3d_cluster,
        kubernetes_by_default=getattr(args, "kubernetes_by_default", False),
        reach=args.reach,
        agent_namespace=args.agent_namespace,
        # Seeds pull through the cluster's mirror: worth looking for unless --seeds 0.
        find_mirrors=getattr(args, "seeds", 0) != 0,
    )


def ssh_options(args: argparse.Namespace, err: Console) -> SSHOptions:
    """The SSH arguments; warns (every run) when host keys are not verified."""
    from nodeload.errors import UsageError
    from nodeload.transports.ssh import SSHOptions

    if args.ssh_config is not None and not args.ssh_config.is_file():
        raise UsageError(f"-F {args.ssh_config}: no such file")
    if args.insecure_skip_host_key_check:
        err.print(
            "warning: --insecure-skip-host-key-check: node host keys are NOT verified; anyone on the "
            "network path can pose as a node, receive the image and fake containerd's answers",
            markup=False,
        )
    return SSHOptions(
        identity=args.identity,
        ssh_config=args.ssh_config,
        known_hosts=args.known_hosts,
        verify_host_keys=not args.insecure_skip_host_key_check,
        jump=args.jump,
    )


def notifier(err: Console) -> Callable[[str], None]:
    """Notices for a person, on stderr (``--json`` output on stdout stays clean)."""

    def notify(text: str) -> None:
        err.print(text if text.startswith("warning:") else f"nodeload: {text}", markup=False)

    return notify
