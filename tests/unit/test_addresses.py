"""What may stand where an SSH destination goes (nodeload/addresses.py)."""

from __future__ import annotations

import pytest

from nodeload.addresses import dns_name_problem, ip_problem, ssh_name_problem


@pytest.mark.parametrize(
    "name", ["10.0.0.5", "fe80::1", "node-1", "worker-1.example.com", "ubuntu", "my_host", "Node.A"]
)
def test_ordinary_names_pass(name: str) -> None:
    assert ssh_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("-oProxyCommand=id", "starts with '-'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\nctr=id", "whitespace"),
        ("a\x1b[2J", "control"),
        ("a\u202eb", "control"),  # a bidi override hides what follows
        *((f"a{c}b", "shell metacharacter") for c in "'`\"$\\;&<>|(){}"),
    ],
)
def test_what_openssh_refuses_is_refused(name: str, why: str) -> None:
    problem = ssh_name_problem(name)
    assert problem is not None and why in problem


@pytest.mark.parametrize(("text", "ok"), [("10.0.0.9", True), ("2001:db8::5", True), ("10.0.0.9:22", False),
                                          ("node-1", False), ("10.0.0.9 -oUser=x", False)])  # fmt: skip
def test_ip_addresses(text: str, ok: bool) -> None:
    assert (ip_problem(text) is None) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("worker-1", True),
        ("worker-1.example.com", True),
        ("worker-1.example.com.", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-worker", False),
        ("worker-", False),
        ("a;touch x", False),
        ("a..b", False),
        (".".join(["abcdefgh"] * 29), False),  # 260 characters
    ],
)
def test_dns_names(text: str, ok: bool) -> None:
    assert (dns_name_problem(text) is None) is ok
