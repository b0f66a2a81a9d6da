"""Nodes listed one by one on the command line: ``--node [USER@]HOST[:PORT]``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from nodeload.addresses import refused, ssh_name_problem
from nodeload.errors import UsageError
from nodeload.nodes.spec import NodeSpec


def parse_node(text: str) -> NodeSpec:
    """``[USER@]HOST[:PORT]`` as a node; HOST may be an ``~/.ssh/config`` alias or ``[IPv6]``.

    Raises:
        UsageError: when ``text`` is not of that form.
    """
    user, _, hostport = text.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    elif ":" in hostport and not _is_ip(hostport):
        raise UsageError(f"invalid node {text!r}: write an IPv6 address with a port as [ADDR]:PORT")
    for field, value in (("host", host), ("user", user)):
        why = ssh_name_problem(value) if value or field == "host" else None
        if why:
            raise UsageError(f"invalid node: {refused(field, value, why)}")
    if (port is not None and not port.isdigit()) or any(c.isspace() for c in text):
        raise UsageError(f"invalid node {text!r}: expected [USER@]HOST[:PORT]")
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"invalid node {text!r}: port {port} is out of range")
    return NodeSpec(name=text, address=host, user=user or None, port=int(port) if port else None)


def listed_nodes(texts: Iterable[str]) -> list[NodeSpec]:
    """The ``--node`` values as nodes, in order, each once."""
    return [parse_node(text) for text in dict.fromkeys(texts)]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
