"""What may stand where an SSH destination, or a path on a node, goes.

Addresses come from places the user does not write: a Node's ``status.addresses`` is written by
that node's own kubelet, an inventory by whoever maintains it. Through the ssh config they reach
``%h``/``%r`` of a ``ProxyCommand``, which runs in a shell on this machine, so an address that is
not one is refused before anything connects, never passed on. The characters refused are the
ones OpenSSH (9.6 and later) refuses in a host or user name given on its command line.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from nodeload.text import printable

# The characters OpenSSH refuses in a host or user name on its command line.
_SHELL_CHARACTERS = frozenset("'`\"$\\;&<>|(){}")
# A DNS name as RFC 1123 allows it (what Kubernetes writes for Hostname addresses and node names).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def ssh_name_problem(text: str) -> str | None:
    """Why ``text`` cannot be an SSH host or user name, or None when it can."""
    if not text:
        return "it is empty"
    if text.startswith("-"):
        return "it starts with '-' (ssh would read it as an option)"
    for character in text:
        if character.isspace() or unicodedata.category(character) in ("Cc", "Cf"):
            return "it holds whitespace or control characters"
        if character in _SHELL_CHARACTERS:
            return f"it holds {character!r}, a shell metacharacter"
    return None


def ip_problem(text: str) -> str | None:
    """Why ``text`` is not an IP address, or None when it is one."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return "it is not an IP address"
    return None


def dns_name_problem(text: str) -> str | None:
    """Why ``text`` is not a DNS name (RFC 1123), or None when it is one."""
    name = text.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return "it is not a DNS name"
    return None


def node_path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path on a node (a containerd socket), or None when it can.

    Scripts run on the node print what they find as ``key=value`` lines: a path holding a
    newline could add lines of its own.
    """
    if not text.startswith("/"):
        return "it is not an absolute path"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        return "it holds control characters"
    return None


def refused(field: str, value: str, why: str, *, use: str = "an SSH destination") -> str:
    """The message for a refused value: the field it came from, the value (printable), what it
    cannot be used as, and why."""
    return f"{field} {printable(value)!r} cannot be {use}: {why}"
