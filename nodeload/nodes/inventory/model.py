"""The parsed inventory: each host's variables after Ansible's precedence, and host selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.hostvars import _HostVars, _node_spec, _pick_used
from nodeload.nodes.inventory.patterns import (
    _did_you_mean,
    _is_wildcard,
    _order_terms,
    _sample,
    _split_limit,
    _split_subscript,
    _term_regex,
)
from nodeload.nodes.spec import NodeSpec

if TYPE_CHECKING:  # building imports Inventory at run time
    from nodeload.nodes.inventory.building import Vars, _Group


class Inventory:
    """A parsed inventory: hosts, groups and the variables that apply to each host.

    Build one with :func:`load_inventory`. Host lists come in file order (the order in
    which the file first names each host).
    """

    def __init__(
        self,
        source: Path,
        hosts: dict[str, Vars],
        groups: dict[str, _Group],
        rank: dict[str, tuple[int, int, str]],
    ) -> None:
        self._source = source
        self._hosts = hosts
        self._groups = groups
        self._rank = rank
        self._parents: dict[str, list[str]] = {name: [] for name in groups}
        self._direct: dict[str, list[str]] = {host: [] for host in hosts}
        for name, group in groups.items():
            for child in group.children:
                self._parents[child].append(name)
            for host in group.hosts:
                self._direct[host].append(name)
        # Hosts in the same groups share their groups' resolved variables.
        self._views: dict[tuple[str, ...], Vars] = {}

    def hosts(self) -> list[str]:
        """Every host name, in file order, each once."""
        return list(self._hosts)

    def groups(self) -> dict[str, list[str]]:
        """Each group's hosts, those of its child groups included, in file order.

        Includes ``all`` (every host) and ``ungrouped`` (hosts in no other group).
        """
        return {name: self._ordered(self._members([name])) for name in self._groups}

    def select(
        self, *, all_nodes: bool = False, names: Sequence[str] = (), limit: str | None = None
    ) -> list[NodeSpec]:
        """The nodes to push to.

        Args:
            all_nodes: Every host of the inventory.
            names: These hosts, by inventory name, in this order.
            limit: An Ansible ``--limit`` pattern. Alone it selects every matching host;
                with ``all_nodes`` or ``names`` it narrows their selection.

        Returns:
            One NodeSpec per selected host (file order, or the order of ``names``).

        Raises:
            NodeSourceError: Nothing asked for, an unknown name or pattern term, a bad
                pattern, an empty selection, or a host whose variables are invalid.
        """
        if isinstance(names, str):  # a lone name is a Sequence[str] too: do not split it
            names = (names,)
        named = self._named(names)
        if not (all_nodes or named or limit is not None):
            raise NodeSourceError(
                f"no host selected from {self._source}: select all, name hosts or give --limit"
            )
        chosen = self.hosts() if all_nodes or not named else named
        if limit is not None:
            matched = self._limit(limit)
            chosen = [host for host in chosen if host in matched]
            if not chosen:
                among = " among the named hosts" if named and not all_nodes else ""
                raise NodeSourceError(f"--limit {limit!r} matches no host{among} in {self._source}")
        if not chosen:
            raise NodeSourceError(f"inventory {self._source} has no hosts")
        return [self.node_spec(host) for host in chosen]

    def node_spec(self, host: str) -> NodeSpec:
        """Describe one inventory host as a node.

        Args:
            host: The inventory host name (which becomes ``NodeSpec.name``).

        Returns:
            The node, from the host's variables after Ansible's precedence.

        Raises:
            NodeSourceError: No such host, or one of its variables is invalid.
        """
        if host not in self._hosts:
            raise self._no_such_host(host)
        values = _HostVars(self._source, host, self._variables(host))
        return _node_spec(values, self._source.absolute().parent)

    # -- variables ------------------------------------------------------------------

    def _variables(self, host: str) -> Vars:
        """The variables nodeload reads, group values overridden by the host's own."""
        direct = tuple(self._direct[host])
        view = self._views.get(direct)
        if view is None:
            ordered = sorted(self._ancestry(direct), key=self._rank.__getitem__)
            view = _pick_used([self._groups[name].vars for name in ordered])
            self._views[direct] = view
        return {**view, **_pick_used([self._hosts[host]])}

    def _ancestry(self, direct: Iterable[str]) -> set[str]:
        """The given groups and every group above them."""
        return _closure(direct, self._parents.__getitem__)

    def _members(self, groups: Iterable[str]) -> set[str]:
        """Hosts of the given groups and of every group below them."""
        below = _closure(groups, lambda name: self._groups[name].children)
        return {host for name in below for host in self._groups[name].hosts}

    def _ordered(self, hosts: set[str]) -> list[str]:
        return [host for host in self._hosts if host in hosts]

    # -- selection ------------------------------------------------------------------

    def _named(self, names: Sequence[str]) -> list[str]:
        for name in names:
            if name not in self._hosts:
                raise self._no_such_host(name)
        return list(dict.fromkeys(names))

    def _no_such_host(self, name: str) -> NodeSourceError:
        known = self.hosts()
        listing = f"its hosts include {_sample(known)}" if known else "it has no hosts"
        hint = _did_you_mean(name, known)
        return NodeSourceError(f"no host {name!r} in inventory {self._source}{hint}; {listing}")

    def _limit(self, pattern: str) -> set[str]:
        """The hosts an Ansible host pattern matches: plain terms, then ``&``, then ``!``."""
        terms = _split_limit(pattern)
        if not terms:
            raise NodeSourceError(f"--limit {pattern!r} is an empty pattern")
        chosen: set[str] = set()
        for term in _order_terms(terms):
            if term.startswith("&"):
                chosen &= self._match_term(term[1:], pattern)
            elif term.startswith("!"):
                chosen -= self._match_term(term[1:], pattern)
            else:
                chosen |= self._match_term(term, pattern)
        return chosen

    def _match_term(self, term: str, pattern: str) -> set[str]:
        if not term:
            raise NodeSourceError(f"--limit {pattern!r} has an empty term")
        if term in self._hosts:  # as Ansible: a host's own name is never a pattern
            return {term}
        expr, subscript = _split_subscript(term)
        if not _is_wildcard(expr) and expr not in self._groups and expr not in self._hosts:
            # Ansible only warns; a mistyped name would silently push to fewer nodes.
            hint = _did_you_mean(expr, [*self._groups, *self._hosts])
            raise NodeSourceError(f"--limit {pattern!r}: no host or group {expr!r} in {self._source}{hint}")
        hosts = self._enumerate(expr, pattern)
        return set(hosts if subscript is None else hosts[subscript])

    def _enumerate(self, expr: str, pattern: str) -> list[str]:
        """Hosts of the groups ``expr`` matches; also hosts it matches, as Ansible decides."""
        regex = _term_regex(expr, pattern)
        groups = [name for name in self._groups if regex.match(name)]
        found = self._members(groups)
        if not groups or expr.startswith("~") or any(c in expr for c in ".?*["):
            found.update(host for host in self._hosts if regex.match(host))
        return self._ordered(found)


def _closure(start: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
    """``start`` and every group reached from it by ``step`` (each group once: the graph is acyclic,
    but shared parents would otherwise be walked again)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(step(name))
    return seen
