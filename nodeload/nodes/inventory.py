"""Ansible inventories (INI or YAML) read into :class:`~nodeload.nodes.spec.NodeSpec` lists.

:func:`load_inventory` reads one static inventory file as ansible-core's ``ini`` and
``yaml`` inventory plugins do: groups, ``:children`` nesting, ``:vars``, host ranges such
as ``web[01:03].example.com``, ``host:port``, and Ansible's variable precedence (``all`` <
parent group < child group < host; groups at the same depth ordered by
``ansible_group_priority``, then by name, the later winning). :meth:`Inventory.select`
picks hosts by name or by an Ansible ``--limit`` pattern and describes each with the
connection variables Ansible itself would use (``ansible_host``, ``ansible_port``,
``ansible_user``, the private key file, ``ansible_become``, ``ansible_connection``, a
ProxyJump in the ssh args) and nodeload's own ``nodeload_containerd_socket``,
``nodeload_namespace`` and ``nodeload_platform``.

Deliberately not evaluated: ``group_vars/`` and ``host_vars/`` directories, inventory
directories, dynamic inventory scripts and plugin configurations (``ansible-inventory -i
SRC --list --yaml`` exports any of those as a file this module reads), and Jinja
templates: a variable nodeload needs that holds ``{{ ... }}`` is an error, not an address.

The file is untrusted input: its size, host ranges, YAML alias fan-out and group nesting
are bounded, and every defect is a :class:`~nodeload.errors.NodeSourceError` naming the
file and the line or YAML path.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import ipaddress
import itertools
import re
import shlex
import stat
import string
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from nodeload.errors import NodeSourceError, UsageError
from nodeload.nodes.spec import NodeSpec, Reach
from nodeload.platforms import Platform

# An inventory is text a person maintains; anything larger is a mistake or hostile.
MAX_INVENTORY_BYTES = 16 * 1024 * 1024
# One host pattern such as web[0:99999999] would otherwise materialize millions of names.
MAX_RANGE_HOSTS = 65_536
# Host entries plus variable assignments: YAML aliases let a small file repeat a big
# mapping under thousands of groups, so work is bounded by this, not by the file size.
MAX_ENTRIES = 2_000_000
# Real inventories nest groups a few levels; recursive YAML aliases nest without end.
MAX_GROUP_DEPTH = 64

Vars = dict[str, object]

# The variables nodeload reads. Ansible's ssh plugin takes the later name of each pair
# when both are set; so does _HostVars.lookup.
_ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_CONTAINER_VARS = ("ansible_host", "ansible_docker_host")
# In the order ssh receives them; ssh keeps the first ProxyJump it is given.
_SSH_ARGS_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_USED_VARS = frozenset(
    (
        *_ADDRESS_VARS,
        *_PORT_VARS,
        *_USER_VARS,
        *_KEY_VARS,
        *_CONTAINER_VARS,
        *_SSH_ARGS_VARS,
        "ansible_connection",
        "ansible_become",
        "nodeload_containerd_socket",
        "nodeload_namespace",
        "nodeload_platform",
    )
)

_CONNECTIONS: dict[str, Reach] = {
    "smart": "ssh",
    "ssh": "ssh",
    "ansible.builtin.ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "local": "local",
    "ansible.builtin.local": "local",
    "docker": "docker",
    "community.docker.docker": "docker",
    "community.docker.docker_api": "docker",
}
# Ansible's boolean(): these spellings, any case.
_TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "off", "0", "n", "f", ""})
# ssh(1) options that take a value, so that a scan for -J skips their values like getopt.
_SSH_VALUE_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_PROXY_JUMP = re.compile(r"\s*proxyjump(?:\s*=\s*|\s+)(\S+)\s*", re.IGNORECASE)


def load_inventory(path: Path) -> Inventory:
    """Read an Ansible inventory file.

    YAML when the name ends in ``.yml``/``.yaml`` or the document is a mapping of groups;
    INI otherwise.

    Args:
        path: The inventory file.

    Returns:
        The inventory's hosts, groups and variables.

    Raises:
        NodeSourceError: The file is missing, unreadable, too large or malformed.
    """
    text = _read(path)
    if path.suffix.lower() in (".yml", ".yaml"):
        builder = _from_yaml(_load_yaml(text, path), path)
    else:
        document = _sniff_yaml(text)
        builder = _from_ini(text, path) if document is None else _from_yaml(document, path)
    return builder.build()


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
        seen: set[str] = set()
        todo = list(direct)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self._parents[name])
        return seen

    def _members(self, groups: Iterable[str]) -> set[str]:
        """Hosts of the given groups and of every group below them."""
        seen: set[str] = set()
        todo = list(groups)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self._groups[name].children)
        return {host for name in seen for host in self._groups[name].hosts}

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


# -- building -----------------------------------------------------------------------


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
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
        self._budget = MAX_ENTRIES

    def group(self, name: str) -> _Group:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = _Group()
        return found

    def add_host(self, name: str, group: str, variables: Vars) -> None:
        self._spend(1 + len(variables))
        self.hosts.setdefault(name, {}).update(variables)
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


def _pick_used(layers: Iterable[Vars]) -> Vars:
    """The variables nodeload reads from ``layers``, a later layer overriding an earlier."""
    return {key: layer[key] for layer in layers for key in _USED_VARS if key in layer}


# -- reading ------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise NodeSourceError(f"inventory {path} is a directory; give an inventory file")
        if not stat.S_ISREG(info.st_mode):
            raise NodeSourceError(f"inventory {path} is not a regular file")
        if info.st_size > MAX_INVENTORY_BYTES:
            raise NodeSourceError(f"inventory {path} is larger than {MAX_INVENTORY_BYTES // 2**20} MiB")
        with path.open("rb") as file:
            data = file.read(MAX_INVENTORY_BYTES + 1)  # the file may grow after stat()
    except FileNotFoundError:
        raise NodeSourceError(f"inventory {path} does not exist") from None
    except OSError as exc:
        raise NodeSourceError(f"cannot read inventory {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INVENTORY_BYTES:
        raise NodeSourceError(f"inventory {path} is larger than {MAX_INVENTORY_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NodeSourceError(f"inventory {path} is not UTF-8 text (byte {exc.start})") from None


def _load_yaml(text: str, source: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise NodeSourceError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise NodeSourceError(f"{source}: YAML nested too deeply") from None
    # PyYAML lets constructor failures through raw, e.g. ValueError for 2001-13-01.
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        raise NodeSourceError(f"{source}: malformed YAML: {exc}") from None


def _sniff_yaml(text: str) -> dict[object, object] | None:
    """The document, when a file without a YAML extension is a YAML inventory.

    That is a mapping whose values are all group bodies (or a plugin configuration, to
    report it as such): an INI host line such as ``h note="a: b"`` also reads as a YAML
    mapping, but never as one of mappings.
    """
    lines = (line.strip() for line in text.split("\n"))
    first = next((line for line in lines if line and line[0] not in "#;"), "")
    if first.startswith("["):  # an INI section; also spares PyYAML a large INI file
        return None
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        return None
    if not isinstance(document, dict):
        return None
    if "plugin" in document or all(body is None or isinstance(body, dict) for body in document.values()):
        return document
    return None


# -- INI ----------------------------------------------------------------------------

# ``[group]``, ``[group:vars]`` or ``[group:children]``, perhaps with a ``#`` comment.
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_LINE = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")


def _from_ini(text: str, source: Path) -> _Builder:
    parser = _IniParser(source)
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line and line[0] not in "#;":
            parser.line(lineno, line)
    parser.finish()
    return parser.builder


@dataclass(frozen=True)
class _Reference:
    """Where a group was used before (or without) being declared."""

    lineno: int
    line: str
    problem: str


class _IniParser:
    """Ansible's INI inventory grammar, one stripped line at a time."""

    def __init__(self, source: Path) -> None:
        self.builder = _Builder(source)
        self._source = source
        # Lines before any section are hosts of ``ungrouped``.
        self._group = "ungrouped"
        self._kind = "hosts"
        # A group exists once it has a [g] or [g:children] section; [g:vars] and
        # [parent:children] may name it earlier, but must not name it only.
        self._declared = {"all", "ungrouped"}
        self._undeclared: dict[str, _Reference] = {}

    def line(self, lineno: int, line: str) -> None:
        section = _SECTION.fullmatch(line)
        if section:
            self._section(lineno, line, section.group(1), section.group(2) or "hosts")
        elif line.startswith("[") and line.endswith("]"):
            raise self._error(lineno, line, "invalid section header (a group name has no spaces or ':')")
        elif self._kind == "hosts":
            self._host_line(lineno, line)
        elif self._kind == "vars":
            self._vars_line(lineno, line)
        else:
            self._child_line(lineno, line)

    def finish(self) -> None:
        if self._undeclared:
            first = min(self._undeclared.values(), key=lambda ref: ref.lineno)
            raise self._error(first.lineno, first.line, first.problem)

    def _section(self, lineno: int, line: str, group: str, kind: str) -> None:
        if kind not in ("hosts", "vars", "children"):
            raise self._error(lineno, line, f"unknown section type {kind!r} (expected vars or children)")
        self._group, self._kind = group, kind
        self.builder.group(group)
        if kind != "vars":
            self._declared.add(group)
            self._undeclared.pop(group, None)
        elif group not in self._declared:
            problem = f"[{group}:vars] is for group {group!r}, which no [{group}] section declares"
            self._undeclared.setdefault(group, _Reference(lineno, line, problem))

    def _host_line(self, lineno: int, line: str) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise self._error(lineno, line, f"cannot split the host line ({exc})") from None
        if not tokens:
            return
        if tokens[0] == "---":
            raise self._error(lineno, line, "'---' starts a YAML document; a YAML inventory is a mapping")
        try:
            names, port = _expand_host_pattern(tokens[0])
        except _BadPattern as exc:
            raise self._error(lineno, line, str(exc)) from None
        variables: Vars = {} if port is None else {"ansible_port": port}
        for token in tokens[1:]:
            key, equals, value = token.partition("=")
            if not equals or not key:
                raise self._error(lineno, line, f"expected key=value after the host name, got {token!r}")
            variables[key] = _ini_value(value)
        for name in names:
            self.builder.add_host(name, self._group, variables)

    def _vars_line(self, lineno: int, line: str) -> None:
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            raise self._error(lineno, line, f"expected key=value in [{self._group}:vars]")
        self.builder.set_vars(self._group, {key.strip(): _ini_value(value.strip())})

    def _child_line(self, lineno: int, line: str) -> None:
        match = _GROUP_LINE.fullmatch(line)
        if not match:
            raise self._error(lineno, line, f"expected a group name in [{self._group}:children]")
        child = match.group(1)
        self.builder.add_child(self._group, child)
        if child not in self._declared:
            problem = f"[{self._group}:children] names group {child!r}, which no [{child}] section declares"
            self._undeclared.setdefault(child, _Reference(lineno, line, problem))

    def _error(self, lineno: int, line: str, message: str) -> NodeSourceError:
        shown = line if len(line) <= 200 else line[:200] + "..."
        return NodeSourceError(f"{self._source}:{lineno}: {message}: {shown!r}")


def _ini_value(text: str) -> object:
    """A Python literal where the text is one (``2222`` → 2222), else the text, as Ansible.

    Ansible documents ``:vars`` values as strings but parses them like host-line values;
    either way the fields nodeload uses are coerced, so quoted values simply lose quotes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for "\d" and the like
            value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    if value is None or isinstance(value, str | int | float | list | tuple | dict):
        return value
    return text  # bytes, complex, sets, Ellipsis: not inventory values


# -- YAML ---------------------------------------------------------------------------


def _from_yaml(document: object, source: Path) -> _Builder:
    builder = _Builder(source)
    if document is None:  # an empty file
        return builder
    if not isinstance(document, dict):
        raise NodeSourceError(
            f"{source}: a YAML inventory is a mapping of groups (e.g. all:), not {_kind(document)}"
        )
    plugin = document.get("plugin")
    if isinstance(plugin, str):
        raise NodeSourceError(
            f"{source} configures the inventory plugin {plugin!r}; export its hosts with"
            " `ansible-inventory -i SOURCE --list --yaml` and give that file"
        )
    walker = _YamlWalker(builder)
    for key, body in document.items():
        name = walker.name(key, "top level")
        walker.group(name, body, name, 0)
    return builder


class _YamlWalker:
    """Walks a YAML inventory's groups into a builder, checking each type on the way."""

    def __init__(self, builder: _Builder) -> None:
        self._builder = builder
        # (group, id(body)) pairs already walked: aliases can repeat one body under many
        # groups and levels, and walking every repeat would take exponential time.
        self._walked: set[tuple[str, int]] = set()

    def error(self, path: str, message: str) -> NodeSourceError:
        return NodeSourceError(f"{self._builder.source}: {path}: {message}")

    def name(self, key: object, path: str) -> str:
        if isinstance(key, str) and key:
            return key
        if key == "":
            raise self.error(path, "empty name")
        raise self.error(path, f"names must be strings; {key!r} is {_kind(key)} (quote it)")

    def group(self, name: str, body: object, path: str, depth: int) -> None:
        self._builder.group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise self.error(path, f"a group is a mapping of hosts, vars and children, not {_kind(body)}")
        if (name, id(body)) in self._walked:
            return
        if depth > MAX_GROUP_DEPTH:
            raise self.error(path, f"groups nest more than {MAX_GROUP_DEPTH} levels deep")
        self._walked.add((name, id(body)))
        for key, value in body.items():
            where = f"{path}.{key}"
            if key == "hosts":
                self._hosts(name, self._section(value, where, "host names"), where)
            elif key == "vars":
                self._builder.set_vars(name, self._variables(value, where))
            elif key == "children":
                self._children(name, self._section(value, where, "group names"), where, depth)
            else:
                # Ansible warns and skips; a mistyped "host:" would silently lose hosts.
                raise self.error(where, "unexpected key: a group has only hosts, vars and children")

    def _section(self, value: object, path: str, what: str) -> dict[object, object]:
        if value is None:
            return {}
        if isinstance(value, str):  # Ansible takes a lone name for a one-entry mapping
            return {value: None}
        if isinstance(value, dict):
            return value
        hint = " (write 'name:' per entry, not '- name')" if isinstance(value, list) else ""
        raise self.error(path, f"must be a mapping of {what}, not {_kind(value)}{hint}")

    def _hosts(self, group: str, section: dict[object, object], path: str) -> None:
        for key, value in section.items():
            pattern = self.name(key, path)
            where = f"{path}.{pattern}"
            try:
                names, port = _expand_host_pattern(pattern)
            except _BadPattern as exc:
                raise self.error(where, str(exc)) from None
            variables = self._variables(value, where)
            if port is not None:
                variables = {"ansible_port": port, **variables}
            for name in names:
                self._builder.add_host(name, group, variables)

    def _variables(self, value: object, path: str) -> Vars:
        if value is None:
            return {}
        if isinstance(value, str):  # as Ansible: a lone name declares a variable
            return {value: None}
        if not isinstance(value, dict):
            raise self.error(path, f"variables must be a mapping, not {_kind(value)}")
        return {self.name(key, path): item for key, item in value.items()}

    def _children(self, parent: str, section: dict[object, object], path: str, depth: int) -> None:
        for key, body in section.items():
            child = self.name(key, path)
            self._builder.add_child(parent, child)
            self.group(child, body, f"{path}.{child}", depth + 1)


def _kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


# -- host patterns ------------------------------------------------------------------

# [IPv6]:port, and host:port where the host may hold [a:b] ranges (Ansible's parse_address).
_BRACKETED_PORT = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])+):([0-9]+)")
_RANGE = re.compile(r"\[([^\]]*)\]")


class _BadPattern(ValueError):
    """A host pattern that names no valid hosts; the caller adds where it was."""


def _expand_host_pattern(token: str) -> tuple[list[str], int | None]:
    """The host names and port of an inventory host entry such as ``web[01:03]:2222``."""
    if token.endswith(":"):
        raise _BadPattern(f"host {token!r} ends in ':', which is reserved for a port")
    bracketed = _BRACKETED_PORT.fullmatch(token)
    if bracketed and _is_ipv6(bracketed.group(1)):
        return [bracketed.group(1)], _port_suffix(bracketed.group(2), token)
    if _is_ipv6(token):  # a bare IPv6 address has no port: its colons are its own
        return [token], None
    with_port = _HOST_PORT.fullmatch(token)
    if with_port:
        return _expand_ranges(with_port.group(1)), _port_suffix(with_port.group(2), token)
    return _expand_ranges(token), None


def _port_suffix(digits: str | None, token: str) -> int | None:
    if digits is None:
        return None
    if not 1 <= int(digits) <= 65535:
        raise _BadPattern(f"host {token!r} has an invalid port {digits} (expected 1-65535)")
    return int(digits)


def _is_ipv6(text: str) -> bool:
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _expand_ranges(pattern: str) -> list[str]:
    """Every name a pattern with ``[start:end(:step)]`` ranges stands for, in order."""
    pieces: list[list[str]] = []
    count = 1
    end = 0
    for match in _RANGE.finditer(pattern):
        values = _range_values(match.group(1), pattern)
        count *= len(values)
        if count > MAX_RANGE_HOSTS:
            raise _BadPattern(f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
        pieces += [[pattern[end : match.start()]], values]
        end = match.end()
    pieces.append([pattern[end:]])
    literal = "".join(piece[0] for piece in pieces[::2])
    if not literal and len(pieces) == 1:
        raise _BadPattern("empty host name")
    if "[" in literal or "]" in literal:
        raise _BadPattern(f"unbalanced brackets in host pattern {pattern!r}")
    return ["".join(parts) for parts in itertools.product(*pieces)]


def _range_values(spec: str, pattern: str) -> list[str]:
    """The values of one range: ``01:10`` keeps the width, ``a:f`` is letters, ``:5`` starts at 0."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: expected [start:end] or [start:end:step]")
    begin, end = parts[0] or "0", parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not re.fullmatch(r"[0-9]+", step_text) or int(step_text) == 0:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the step must be a positive integer")
    step = int(step_text)
    if re.fullmatch(r"[0-9]+", begin) and re.fullmatch(r"[0-9]+", end):
        return _numeric_range(begin, end, step, spec, pattern)
    letters = string.ascii_letters
    if len(begin) == len(end) == 1 and begin in letters and end in letters:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the start is after the end")
        return list(letters[first : last + 1 : step])
    raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: expected numbers or single letters")


def _numeric_range(begin: str, end: str, step: int, spec: str, pattern: str) -> list[str]:
    # A leading zero fixes the width of every name (web[01:10] -> web01 ... web10).
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise _BadPattern(
            f"invalid range [{spec}] in {pattern!r}: a zero-padded start and end need equal lengths"
        )
    values = range(int(begin), int(end) + 1, step)
    if not values:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the start is after the end")
    if len(values) > MAX_RANGE_HOSTS:
        raise _BadPattern(f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
    return [str(value).zfill(width) for value in values]


# -- limit patterns -----------------------------------------------------------------

# One term of a colon-separated pattern: no whitespace, ':' or brackets outside [...].
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
# A subscript on a term: web[0], web[-1], web[0:2] (inclusive), web[1:].
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+):([0-9]*))\]")


def _split_limit(pattern: str) -> list[str]:
    """Ansible's split of a host pattern into terms.

    Commas always separate. Without a comma, colons separate too, except inside
    ``[...]`` and in a pattern that is a single IPv6 address (``fe80::1``,
    ``!fe80::1``). Any other term that holds a colon (an IPv6 address among other
    terms, a regex with ':') needs commas, as in Ansible.
    """
    if "," in pattern:
        terms = pattern.split(",")
    elif _is_ipv6(pattern.strip().lstrip("&!").strip("[]")):
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
    return [term.strip() for term in terms if term.strip()]


def _order_terms(terms: list[str]) -> list[str]:
    """Plain terms (``all`` if none), then ``&`` terms, then ``!`` terms, as Ansible."""
    plain = [term for term in terms if term[0] not in "&!"] or ["all"]
    return plain + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]


def _split_subscript(term: str) -> tuple[str, slice | None]:
    match = _SUBSCRIPT.fullmatch(term)
    if not match:
        return term, None
    expr, index, start, end = match.groups()
    if index is not None:
        position = int(index)
        return expr, slice(position, position + 1 or None)  # [-1] must not become [-1:0]
    return expr, slice(int(start), int(end) + 1 if end else None)


def _is_wildcard(expr: str) -> bool:
    return expr.startswith("~") or any(c in expr for c in "*?[")


def _term_regex(expr: str, pattern: str) -> re.Pattern[str]:
    """``~regex`` (matched from the start, as Ansible), else a shell wildcard."""
    try:
        return re.compile(expr[1:] if expr.startswith("~") else fnmatch.translate(expr))
    except (re.error, OverflowError, RecursionError) as exc:
        raise NodeSourceError(f"--limit {pattern!r}: invalid term {expr!r} ({exc})") from None


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known[:10_000], n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _sample(names: list[str], count: int = 5) -> str:
    more = len(names) - count
    return ", ".join(names[:count]) + (f" and {more} more" if more > 0 else "")


# -- host variables -> NodeSpec -----------------------------------------------------


@dataclass(frozen=True)
class _HostVars:
    """One host's resolved variables, read with type checks that name the host."""

    source: Path
    host: str
    values: Vars

    def error(self, message: str) -> NodeSourceError:
        return NodeSourceError(f"{self.source}: host {self.host!r}: {message}")

    def lookup(self, *names: str) -> tuple[str, object] | None:
        """The last of ``names`` that is set (null counts as unset), with its value."""
        found = None
        for name in names:
            if self.values.get(name) is not None:
                found = (name, self.values[name])
        return found

    def text(self, *names: str) -> str | None:
        found = self.lookup(*names)
        if found is None:
            return None
        name, value = found
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"{name} must be a string, not {_kind(value)}")
        text = str(value).strip()
        if "{{" in text or "{%" in text:
            raise self.error(f"{name} is a Jinja template ({text!r}); nodeload does not evaluate templates")
        return text or None

    def port(self) -> int | None:
        found = self.lookup(*_PORT_VARS)
        if found is None:
            return None
        name, value = found
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,5}\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(f"invalid {name} {value!r} (expected a port number, 1-65535)")
        return value

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise self.error(f"{name} {value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")

    def reach(self) -> Reach:
        connection = self.text("ansible_connection") or "smart"
        reach = _CONNECTIONS.get(connection)
        if reach is None:
            supported = "ssh, paramiko, smart, local, docker"
            raise self.error(f"ansible_connection {connection!r} is not one nodeload can use ({supported})")
        return reach

    def identity(self, base: Path) -> Path | None:
        text = self.text(*_KEY_VARS)
        if text is None:
            return None
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~user/... for an unknown user, or no home directory
            raise self.error(f"cannot expand the private key path {text!r}") from None
        return path if path.is_absolute() else base / path

    def jump(self) -> str | None:
        for name in _SSH_ARGS_VARS:
            text = self.text(name)
            if text is None:
                continue
            try:
                args = shlex.split(text)
            except ValueError as exc:
                raise self.error(f"cannot split {name} ({exc})") from None
            jump = _jump_in(args)
            if jump is not None:
                return None if jump.lower() == "none" else jump
        return None

    def sockets(self) -> tuple[str, ...]:
        value = self.values.get("nodeload_containerd_socket")
        if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
            return tuple(value)
        text = self.text("nodeload_containerd_socket")
        return () if text is None else (text,)

    def platform(self) -> Platform | None:
        text = self.text("nodeload_platform")
        if text is None:
            return None
        try:
            return Platform.parse(text)
        except UsageError as exc:
            raise self.error(f"nodeload_platform: {exc}") from None


def _jump_in(args: list[str]) -> str | None:
    """The first jump host in ssh arguments: ``-J HOST``, ``-JHOST``, ``-o ProxyJump=HOST``."""
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        for index, flag in enumerate(arg[1:], start=2):  # getopt: flags may be bundled, -qJ h
            if flag in _SSH_VALUE_FLAGS:
                value = arg[index:]
                if not value and position < len(args):
                    value = args[position]
                    position += 1
                if flag == "J":
                    return value or None
                option = _PROXY_JUMP.fullmatch(value) if flag == "o" else None
                if option:
                    return option.group(1)
                break
    return None


def _node_spec(values: _HostVars, base: Path) -> NodeSpec:
    reach = values.reach()
    spec = NodeSpec(
        name=values.host,
        sockets=values.sockets(),
        namespace=values.text("nodeload_namespace"),
        platform=values.platform(),
        become=values.flag("ansible_become"),
        reach=reach,
    )
    if reach == "docker":
        return replace(spec, container=values.text(*_CONTAINER_VARS) or values.host)
    if reach == "local":
        return spec
    return replace(
        spec,
        address=values.text(*_ADDRESS_VARS) or values.host,
        user=values.text(*_USER_VARS),
        port=values.port(),
        identity=values.identity(base),
        jump=values.jump(),
    )
