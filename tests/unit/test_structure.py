"""The shape of the package, read from its own imports: the layers only import downwards.

Every ``import`` counts, those inside functions too (a late import is still a dependency).
A unit is a top-level module of ``nodeload`` or one of its packages (``nodeload/nodes/`` is
``nodes``); the generated gRPC modules are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nodeload"


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "containerd/api" not in path.as_posix():
            yield path, ast.parse(path.read_text(), str(path))


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where, for every import between two units."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path, tree in _sources():
        here = _unit(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                other = parts[1] if parts[0] == "nodeload" and len(parts) > 1 else here
                if other != here and ((PACKAGE / other).is_dir() or (PACKAGE / f"{other}.py").is_file()):
                    found[(here, other)].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for other in graph[unit]:
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for unit in list(graph):
        if unit not in index:
            visit(unit)
    return groups


def test_no_import_cycle_between_packages() -> None:
    imports = _imports()
    cycles = _cycles(set(imports))
    where = {
        " <-> ".join(group): {
            f"{a} -> {b}": imports[(a, b)][:2] for a in group for b in group if (a, b) in imports
        }
        for group in cycles
    }
    assert not cycles, where


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"), ("b", "c")}) == []


def test_where_nodes_come_from_knows_nothing_of_how_they_are_reached_or_kept() -> None:
    """nodes/ describes nodes; reaching them (transports, the session) and keeping connections
    (persist) sit above it."""
    imported = {b for (a, b) in _imports() if a == "nodes"}
    assert not imported & {"transports", "session", "persist", "fanout", "api", "cli"}, imported


def test_no_module_level_mutable_session_state() -> None:
    """State that lives across calls belongs to an object the caller makes (a Session), not to a
    module: no ``global`` rebinding, and no module-level registry that starts empty."""
    found = []
    for path, tree in _sources():
        found += [f"{path.name}:{n.lineno} global" for n in ast.walk(tree) if isinstance(n, ast.Global)]
        for node in tree.body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            empty_literal = isinstance(value, ast.Set | ast.List) and not value.elts
            empty_literal |= isinstance(value, ast.Dict) and not value.keys
            factory = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and not value.args
            empty_call = factory and value.func.id in ("set", "dict", "list", "defaultdict")  # type: ignore[union-attr]
            if empty_literal or empty_call:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
