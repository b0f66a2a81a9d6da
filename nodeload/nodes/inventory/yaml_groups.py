"""The YAML inventory format, as ansible-core's ``yaml`` plugin reads it."""

from __future__ import annotations

from pathlib import Path

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.building import Vars, _Builder
from nodeload.nodes.inventory.hostvars import _kind
from nodeload.nodes.inventory.patterns import _BadPattern, _expand_host_pattern

# Real inventories nest groups a few levels; recursive YAML aliases nest without end.
MAX_GROUP_DEPTH = 64


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
            f"{source} configures the inventory plugin {plugin!r}, which only Ansible can run: install "
            "ansible-core (pip install ansible-core) and nodeload reads it through ansible-inventory"
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
            for name in names:
                self._builder.add_host(name, group, variables, port)

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
