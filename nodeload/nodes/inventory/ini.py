"""The INI inventory format, as ansible-core's ``ini`` plugin reads it."""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.building import Vars, _Builder
from nodeload.nodes.inventory.patterns import _BadPattern, _expand_host_pattern

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
        variables: Vars = {}
        for token in tokens[1:]:
            key, equals, value = token.partition("=")
            if not equals or not key:
                raise self._error(lineno, line, f"expected key=value after the host name, got {token!r}")
            variables[key] = _ini_value(value)
        for name in names:
            self.builder.add_host(name, self._group, variables, port)

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
