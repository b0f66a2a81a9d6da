import pytest

from nodeload.errors import UsageError
from nodeload.transports.ssh import NodeAddress, parse_node


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node1", NodeAddress("node1")),
        ("root@node1", NodeAddress("node1", "root")),
        ("root@10.0.0.5:2222", NodeAddress("10.0.0.5", "root", 2222)),
        ("[::1]:22", NodeAddress("::1", None, 22)),
        ("ubuntu@[fe80::1]", NodeAddress("fe80::1", "ubuntu")),
    ],
)
def test_parse_node(text: str, expected: NodeAddress) -> None:
    assert parse_node(text) == expected


@pytest.mark.parametrize("text", ["", "host:port", "user@", "a b", "host:22:33"])
def test_parse_node_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_node(text)


def test_bare_ipv6_without_port() -> None:
    assert parse_node("fe80::1") == NodeAddress("fe80::1")
