import pytest

from nodeload.errors import UsageError
from nodeload.nodes import NodeSpec
from nodeload.nodes.listed import listed_nodes, parse_node


@pytest.mark.parametrize(
    ("text", "address", "user", "port"),
    [
        ("node1", "node1", None, None),
        ("root@node1", "node1", "root", None),
        ("root@10.0.0.5:2222", "10.0.0.5", "root", 2222),
        ("[::1]:22", "::1", None, 22),
        ("ubuntu@[fe80::1]", "fe80::1", "ubuntu", None),
        ("fe80::1", "fe80::1", None, None),
    ],
)
def test_parse_node(text: str, address: str, user: str | None, port: int | None) -> None:
    assert parse_node(text) == NodeSpec(name=text, address=address, user=user, port=port)


@pytest.mark.parametrize("text", ["", "host:port", "user@", "a b", "host:22:33", "host:0", "host:70000"])
def test_parse_node_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_node(text)


def test_listed_nodes_keep_order_and_drop_repeats() -> None:
    assert [n.name for n in listed_nodes(["b", "a", "b"])] == ["b", "a"]
