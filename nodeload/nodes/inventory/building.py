"""Building: hosts, groups and variables collected as a parser meets them, then settled.

The implicit groups (``all``, ``ungrouped``) are settled as Ansible does, and the group
graph is checked (no cycle, integer priorities) before it becomes an Inventory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.model import Inventory

# Host entries plus variable assignments: YAML aliases let a small file repeat a big
# mapping under thousands of groups, so work is bounded by this, not by the file size.
MAX_ENTRIES = 2_000_000

Vars = dict[str, object]


@dataclass
class _Group:
    """A group as the file states it: direct hosts and children (ordered sets), own vars."""

    hosts: dict[str, None] = field(default_factory=dict)
    children: dict[str, None] = field(default_factory=dict)
    vars: Vars = field(default_factory=dict)


class _Builder:
    """Collects hosts, groups and variables in the order a parser meets them."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.hosts: dict[str, Vars] = {}
        # As Ansible: ungrouped is the first child of all, whatever the file says.
        self.groups: dict[str, _Group] = {"all": _Group(children={"ungrouped": None}), "ungrouped": _Group()}
        self._budget = MAX_ENTRIES

    def group(self, name: str) -> _Group:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = _Group()
        return found

    def add_host(self, name: str, group: str, variables: Vars, port: int | None = None) -> None:
        """``name`` in ``group``; a ``host:port`` entry's port counts only where the host first
        appears (Ansible sets it when it creates the host), a variable's anywhere."""
        self._spend(1 + len(variables))
        if name not in self.hosts:
            self.hosts[name] = {} if port is None else {"ansible_port": port}
        self.hosts[name].update(variables)
        self.group(group).hosts[name] = None

    def set_vars(self, group: str, variables: Vars) -> None:
        self._spend(len(variables))
        self.group(group).vars.update(variables)

    def add_child(self, parent: str, child: str) -> None:
        self._spend(1)
        self.group(parent).children[child] = None
        self.group(child)

    def _spend(self, entries: int) -> None:
        self._budget -= entries
        if self._budget < 0:
            raise NodeSourceError(f"{self.source}: more than {MAX_ENTRIES} host entries and variables")

    def build(self) -> Inventory:
        """Settle the implicit groups as Ansible does, then check the group graph."""
        _attach_orphans(self.groups)
        _settle_ungrouped(self.groups, self.hosts)
        depth = _depths(self.groups, self.source)
        priority = _priorities(self.groups, self.source)
        rank = {name: (depth[name], priority[name], name) for name in self.groups}
        return Inventory(self.source, self.hosts, self.groups, rank)


def _attach_orphans(groups: dict[str, _Group]) -> None:
    """Every group without a parent is a child of ``all``."""
    has_parent = {child for group in groups.values() for child in group.children}
    for name in groups:
        if name != "all" and name not in has_parent:
            groups["all"].children[name] = None


def _settle_ungrouped(groups: dict[str, _Group], hosts: dict[str, Vars]) -> None:
    """``ungrouped`` holds exactly the hosts that are in no group but ``all``."""
    grouped = {h for name, group in groups.items() if name not in ("all", "ungrouped") for h in group.hosts}
    groups["ungrouped"].hosts = {host: None for host in hosts if host not in grouped}


def _depths(groups: dict[str, _Group], source: Path) -> dict[str, int]:
    """Each group's longest distance below ``all`` (Ansible's depth); a cycle is an error."""
    waiting = dict.fromkeys(groups, 0)  # parents not yet visited (Kahn's algorithm)
    for group in groups.values():
        for child in group.children:
            waiting[child] += 1
    depth = dict.fromkeys(groups, 0)
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        name = ready.pop()
        for child in groups[name].children:
            depth[child] = max(depth[child], depth[name] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    stuck = {name for name, count in waiting.items() if count > 0}
    if stuck:
        cycle = " -> ".join(_find_cycle(groups, stuck))
        raise NodeSourceError(f"{source}: child groups form a cycle: {cycle}")
    return depth


def _find_cycle(groups: dict[str, _Group], stuck: set[str]) -> list[str]:
    """A cycle among groups Kahn's algorithm could not order, parent first.

    Every stuck group has a stuck parent, so walking up from any of them must repeat.
    """
    parent_of: dict[str, str] = {}
    for name in groups:
        if name in stuck:
            for child in groups[name].children:
                if child in stuck:
                    parent_of.setdefault(child, name)
    node = next(name for name in groups if name in stuck)
    position: dict[str, int] = {}  # a dict, not list.index: cycles may be long
    path: list[str] = []
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = parent_of[node]
    return [*path[position[node] :], node][::-1]


def _priorities(groups: dict[str, _Group], source: Path) -> dict[str, int]:
    """``ansible_group_priority`` (default 1) is a group attribute in Ansible, not a var."""
    priorities: dict[str, int] = {}
    for name, group in groups.items():
        value = group.vars.pop("ansible_group_priority", 1)
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise NodeSourceError(
                f"{source}: group {name!r}: ansible_group_priority {value!r} is not an integer"
            )
        priorities[name] = value
    return priorities
