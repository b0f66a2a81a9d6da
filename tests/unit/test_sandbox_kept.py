"""What ``nodeload sandbox up`` makes of its arguments (nothing is started here: the nodes
themselves are tests/e2e/test_sandbox_kept.py)."""

from __future__ import annotations

import pytest

from nodeload.errors import UsageError
from nodeload.sandbox.kept import VARIANTS, check_name, variants
from nodeload.sandbox.node import K3S_CONTAINERD_SOCKET


def test_variants_go_to_the_nodes_in_order_and_the_last_to_the_rest() -> None:
    made = variants(["k3s", "sudo"], 4)
    assert made[0].containerd_socket == K3S_CONTAINERD_SOCKET
    assert [v.login for v in made] == ["root", "ubuntu", "ubuntu", "ubuntu"]
    assert variants([], 2) == [VARIANTS["plain"]] * 2


@pytest.mark.parametrize(
    ("names", "nodes", "says"),
    [(["nope"], 2, "unknown --variant 'nope'"), (["plain", "sudo"], 1, "give --nodes 2")],
)
def test_variants_that_cannot_be_are_usage_errors(names: list[str], nodes: int, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        variants(names, nodes)


@pytest.mark.parametrize("name", ["X", "a b", "../up", "-rf", ""])
def test_names_that_cannot_name_a_directory_and_a_label(name: str) -> None:
    with pytest.raises(UsageError, match="invalid sandbox name"):
        check_name(name)
    assert check_name("demo-2.x") == "demo-2.x"
