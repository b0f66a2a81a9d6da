"""The parsed inventory: each host's variables after Ansible's precedence, and host selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.hostvars import _HostVars, _node_spec, _pick_used
from nodeload.nodes.inventory.patterns import (
    _apply_subscript,
    _did_you_mean,
    _is_wildcard,
    _order_terms,
    _read_limit_files,
    _sample,
    _split_limit,
    _split_subscript,
    _term_regex,
)
from nodeload.nodes.spec import NodeSpec
from nodeload.wording import setting

if TYPE_CHECKING:  # building imports Inventory at run time
    from nodeload.nodes.inventory.building import Vars, _Group
    from nodeload.nodes.inventory.files import VarsDirectory


class Inventory:
    """A parsed inventory: hosts, groups and the variables that apply to each host.

    Build one with :func:`load_inventory`. Host lists come in Ansible's order: a group's own
    hosts, then those of its children, then of their children (see :meth:`_group_hosts`).
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
        self._group_hosts_cache: dict[str, list[str]] = {}
        # Variables of group_vars/ and host_vars/ beside the inventory, then in the current directory.
        self.vars_dirs: list[VarsDirectory] = []

    def hosts(self) -> list[str]:
        """Every host name, in Ansible's order (that of group ``all``), each once."""
        return self._group_hosts("all")

    def groups(self) -> dict[str, list[str]]:
        """Each group's hosts, those of its child groups included, in Ansible's order.

        Includes ``all`` (every host) and ``ungrouped`` (hosts in no other group).
        """
        return {name: self._group_hosts(name) for name in self._groups}

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
                f"no host selected from {self._source}: select all, name hosts or give {setting('limit')}"
            )
        chosen = self.hosts() if all_nodes or not named else named
        if limit is not None:
            matched = set(self._limit(limit))
            chosen = [host for host in chosen if host in matched]
            if not chosen:
                among = " among the named hosts" if named and not all_nodes else ""
                raise NodeSourceError(
                    f"{setting('limit')} {limit!r} matches no host{among} in {self._source}"
                )
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
        return _node_spec(values, Path.cwd())

    # -- variables ------------------------------------------------------------------

    def _variables(self, host: str) -> Vars:
        """The variables nodeload reads, group values overridden by the host's own."""
        direct = tuple(self._direct[host])
        view = self._views.get(direct)
        if view is None:
            # Ansible's order: the inventory's vars of all, then of the other groups; group_vars/
            # of all (the inventory's directory, then the current one); then of the other groups
            # (the inventory's directory, then the current one). Groups by depth, priority, name.
            ordered = sorted(self._ancestry(direct), key=self._rank.__getitem__)
            others = [name for name in ordered if name != "all"]
            layers = [self._groups[name].vars for name in ordered]
            layers += [d.groups.get("all", {}) for d in self.vars_dirs]
            layers += [d.groups.get(name, {}) for d in self.vars_dirs for name in others]
            view = _pick_used(layers)
            self._views[direct] = view
        own = [self._hosts[host], *(d.hosts.get(host, {}) for d in self.vars_dirs)]
        return {**view, **_pick_used(own)}

    def _ancestry(self, direct: Iterable[str]) -> set[str]:
        """The given groups and every group above them."""
        return _closure(direct, self._parents.__getitem__)

    def _group_hosts(self, name: str) -> list[str]:
        """A group's hosts as Ansible lists them (``Group.get_hosts``): its own, then its
        children's, then theirs, level by level, each host once.

        Below the first level, Ansible takes the groups of a level in its hash order, which varies
        from run to run when several groups there have children; nodeload takes them in the
        order they were met, which is one of Ansible's orders.
        """
        found = self._group_hosts_cache.get(name)
        if found is not None:
            return found
        children = self._groups[name].children
        ordered = [name, *children]
        seen: set[str] = set()
        level = [*children, name]
        while level:
            seen.update(level)
            below: dict[str, None] = {}
            for group in level:
                for child in self._groups[group].children:
                    below[child] = None
                    if child not in seen:
                        ordered.append(child)
            level = [child for child in below if child not in seen]
        found = list(dict.fromkeys(host for group in ordered for host in self._groups[group].hosts))
        self._group_hosts_cache[name] = found
        return found

    # -- selection ------------------------------------------------------------------

    def _named(self, names: Sequence[str]) -> list[str]:
        for name in names:
            if name not in self._hosts:
                raise self._no_such_host(name)
        return list(dict.fromkeys(names))

    def _no_such_host(self, name: str) -> NodeSourceError:
        known = list(self._hosts)
        listing = f"its hosts include {_sample(known)}" if known else "it has no hosts"
        hint = _did_you_mean(name, known)
        return NodeSourceError(f"no host {name!r} in inventory {self._source}{hint}; {listing}")

    def _limit(self, pattern: str) -> list[str]:
        """The hosts an Ansible host pattern matches (``_evaluate_patterns``): plain terms, then
        ``&``, then ``!``; ``@FILE`` terms read from FILE."""
        terms = _read_limit_files(_split_limit(pattern), pattern)
        if not terms:
            raise NodeSourceError(f"{setting('limit')} {pattern!r} is an empty pattern")
        chosen: list[str] = []
        for term in _order_terms(terms):
            if term in self._hosts:  # as Ansible: a host's own name is never a pattern
                chosen.append(term)
                continue
            that = self._match_term(term[1:] if term[0] in "&!" else term, pattern)
            if term.startswith("&"):
                keep = set(that)
                chosen = [host for host in chosen if host in keep]
            elif term.startswith("!"):
                drop = set(that)
                chosen = [host for host in chosen if host not in drop]
            else:
                existing = set(chosen)
                chosen += [host for host in that if host not in existing]
        return list(dict.fromkeys(chosen))

    def _match_term(self, term: str, pattern: str) -> list[str]:
        if not term:
            raise NodeSourceError(f"{setting('limit')} {pattern!r} has an empty term")
        expr, subscript = _split_subscript(term)
        regex = _term_regex(expr, pattern)
        groups = [name for name in self._groups if regex.match(name)]
        hosts = [host for name in groups for host in self._group_hosts(name)]
        if not groups or expr.startswith("~") or any(c in expr for c in ".?*["):
            hosts += [host for host in self._hosts if regex.match(host)]
        if not hosts and not groups and expr != "all":
            # Ansible only warns; a mistyped name would silently push to fewer nodes.
            if _is_wildcard(expr):
                message = (
                    f"{setting('limit')} {pattern!r}: {expr!r} matches no host or group in {self._source}"
                )
                raise NodeSourceError(message)
            hint = _did_you_mean(expr, [*self._groups, *self._hosts])
            raise NodeSourceError(
                f"{setting('limit')} {pattern!r}: no host or group {expr!r} in {self._source}{hint}"
            )
        try:
            return _apply_subscript(hosts, subscript)
        except IndexError:
            message = f"{setting('limit')} {pattern!r}: no hosts matched the subscripted pattern {term!r}"
            raise NodeSourceError(message) from None


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
