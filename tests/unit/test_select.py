"""Which node source a run's options select, and the usage errors of mixing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeload.errors import UsageError
from nodeload.nodes.select import NodeSelection, select_nodes


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
        (NodeSelection(inventory=Path("h"), context="prod"), "--inventory cannot be combined with --context"),
        (NodeSelection(limit="web", names=("a",)), "--limit selects inventory hosts"),
        (
            NodeSelection(kind_cluster="a", k3d_cluster="b"),
            "--kind-cluster cannot be combined with --k3d-cluster",
        ),
        (NodeSelection(), "no target node"),
    ],
)
def test_contradictions_are_usage_errors(selection: NodeSelection, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        select_nodes(selection)


def test_ssh_user_and_sudo_apply_to_listed_nodes() -> None:
    nodes = select_nodes(NodeSelection(names=("a", "bob@b"), ssh_user="ubuntu", sudo=True))
    assert [(n.user, n.become) for n in nodes] == [("ubuntu", True), ("bob", True)]


def test_inventory_hosts(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nw1 ansible_host=10.0.0.1\nw2 ansible_become=yes\n[db]\nd1\n")
    nodes = select_nodes(NodeSelection(inventory=inventory, limit="web"))
    assert [(n.name, n.address, n.become) for n in nodes] == [("w1", "10.0.0.1", False), ("w2", "w2", True)]
