"""Which node source a run's options select, and the usage errors of mixing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeload.errors import UsageError
from nodeload.nodes.select import NodeSelection, select_nodes
from nodeload.wording import for_the_command_line


@pytest.mark.parametrize(
    ("selection", "kind"),
    [
        (NodeSelection(names=("a",)), "listed"),
        (NodeSelection(all_nodes=True), "kubernetes"),
        (NodeSelection(names=("a",), context="prod"), "kubernetes"),
        (NodeSelection(selector="role=web"), "kubernetes"),
        (NodeSelection(names=("a",), kubernetes_by_default=True), "kubernetes"),
        (NodeSelection(inventory=Path("hosts"), all_nodes=True), "inventory"),
        (NodeSelection(kind_cluster="dev", all_nodes=True), "containers"),
    ],
)
def test_source_kind(selection: NodeSelection, kind: str) -> None:
    assert selection.kind == kind


@pytest.mark.parametrize(
    ("selection", "says"),
    [
        (
            NodeSelection(inventory=Path("h"), context="prod"),
            "NodeSelection.inventory cannot be combined with NodeSelection.context",
        ),
        (NodeSelection(limit="web", names=("a",)), "NodeSelection.limit selects inventory hosts"),
        (
            NodeSelection(kind_cluster="a", k3d_cluster="b"),
            "NodeSelection.kind_cluster cannot be combined with NodeSelection.k3d_cluster",
        ),
        (NodeSelection(), "no node given"),
    ],
)
def test_contradictions_are_usage_errors(selection: NodeSelection, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        select_nodes(selection)


def test_the_command_line_reads_its_own_flags() -> None:
    with (
        for_the_command_line(),
        pytest.raises(UsageError, match="--inventory cannot be combined with --context"),
    ):
        select_nodes(NodeSelection(inventory=Path("h"), context="prod"))


def test_ssh_user_and_sudo_apply_to_listed_nodes() -> None:
    nodes = select_nodes(NodeSelection(names=("a", "bob@b"), ssh_user="ubuntu", sudo=True))
    assert [(n.user, n.become) for n in nodes] == [("ubuntu", True), ("bob", True)]


def test_inventory_hosts(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nw1 ansible_host=10.0.0.1\nw2 ansible_become=yes\n[db]\nd1\n")
    nodes = select_nodes(NodeSelection(inventory=inventory, limit="web"))
    assert [(n.name, n.address, n.become) for n in nodes] == [("w1", "10.0.0.1", False), ("w2", "w2", True)]
