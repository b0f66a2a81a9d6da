"""Render a Helm chart without helm: the part of Go's text/template and of Sprig that our charts use.

The chart stays the single source of the agent's manifests; tests render it here and check the
objects (labels, names, security context, scheduling) instead of grepping template text. What
is supported, as helm does it: ``{{- ... -}}`` trimming and ``{{/* */}}`` comments; ``if``/``else
if``/``else``, ``with``, ``range`` (lists and maps, ``$i, $x :=``), ``define``, ``template``,
variables (``:=``, ``=``, ``$``), pipelines and parenthesised calls; the functions in
:data:`_FUNCTIONS` and ``include``; values merged over ``values.yaml`` as ``--set`` would. Anything
else raises :class:`ChartError`, so a template that strays outside this subset fails loudly
here rather than rendering differently from helm.

    objects = manifests(CHART, {"controlPlane": True})
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ChartError(Exception):
    """The chart does not render (a template error, or the chart's own ``fail``)."""


def render(
    chart: Path, values: Mapping[str, Any] | None = None, *, release: str = "nodeload-agent"
) -> dict[str, str]:
    """Every template's output by its file name (``NOTES.txt`` included, ``_*.tpl`` not).

    Raises:
        ChartError: when a template fails or uses what this renderer does not know.
    """
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    merged = _merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, dict(values or {}))
    root = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": "default", "Service": "Helm", "IsInstall": True},
        "Chart": {key[:1].upper() + key[1:]: value for key, value in meta.items()},
    }
    files = sorted(p for p in (chart / "templates").iterdir() if p.is_file())
    engine = _Engine()
    parsed = {p.name: engine.parse(p.read_text(), p.name) for p in files}
    return {
        name: engine.execute(nodes, root).replace("<no value>", "")
        for name, nodes in parsed.items()
        if not name.startswith("_")
    }


def manifests(
    chart: Path, values: Mapping[str, Any] | None = None, *, release: str = "nodeload-agent"
) -> list[dict[str, Any]]:
    """The Kubernetes objects the chart renders to (empty documents dropped)."""
    objects: list[dict[str, Any]] = []
    for name, text in render(chart, values, release=release).items():
        if name.endswith((".yaml", ".yml")):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# -- values as Go prints and tests them ---------------------------------------------------------


def _truth(value: Any) -> bool:
    return bool(value)  # nil, false, 0, "", empty list and map are false, as in Go


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise ChartError(f"printing a {type(value).__name__} ({value!r}): use toYaml")
    return str(value)


def _go_quote(value: Any) -> str:
    return json.dumps("" if value is None else _text(value), ensure_ascii=False)


def _printf(form: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        if match[0] == "%%":
            return "%"
        value = next(values)
        return _go_quote(value) if match[0] == "%q" else _text(value)

    return re.sub(r"%[%sdvq]", one, form)


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # Go's YAML writes a shared map twice, never as an anchor


def _to_yaml(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=False, sort_keys=True)
    return text.rstrip("\n").removesuffix("\n...")


def _fail(message: str) -> None:
    raise ChartError(message)


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise ChartError(message)
    return value


def _dict(*pairs: Any) -> dict[str, Any]:
    return {_text(pairs[i]): pairs[i + 1] if i + 1 < len(pairs) else "" for i in range(0, len(pairs), 2)}


def _set(mapping: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    mapping[key] = value
    return mapping


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": _and,
    "or": _or,
    "not": lambda value: not _truth(value),
    "eq": lambda first, *others: any(first == other for other in others),
    "ne": lambda a, b: a != b,
    "empty": lambda value: not _truth(value),
    "default": lambda fallback, value=None: value if _truth(value) else fallback,
    "quote": lambda *values: " ".join(_go_quote(v) for v in values if v is not None),
    "printf": _printf,
    "indent": _indent,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "toYaml": _to_yaml,
    "fromYaml": lambda text: yaml.safe_load(text) or {},
    "list": lambda *items: list(items),
    "dict": _dict,
    "get": lambda mapping, key: mapping.get(key, ""),
    "set": _set,
    "hasKey": lambda mapping, key: key in mapping,
    "append": lambda items, item: [*(items or []), item],
    "concat": lambda *lists: [item for items in lists for item in (items or [])],
    "deepCopy": copy.deepcopy,
    "len": len,
    "fail": _fail,
    "required": _required,
    "regexMatch": lambda pattern, text: re.search(pattern, text) is not None,
    "hasPrefix": lambda text, prefix: text.startswith(prefix),
    "trimPrefix": lambda prefix, text: text.removeprefix(prefix),
}


# -- parsing ---------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
      | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
      | (?P<op>:=|=|\||\(|\)|,)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str


@dataclass
class _Operand:
    kind: str  # literal, field, variable, ident, pipeline
    value: Any


@dataclass
class _Pipeline:
    commands: list[list[_Operand]]
    declare: list[str] = field(default_factory=list)
    assign: bool = False  # `=` rather than `:=`


@dataclass
class _Node:
    kind: str  # text, output, if, with, range, template
    text: str = ""
    pipeline: _Pipeline | None = None
    branches: list[tuple[_Pipeline | None, list[_Node]]] = field(default_factory=list)
    name: str = ""


def _tokens(source: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(source.rstrip()):
        match = _TOKEN.match(source, position)
        if match is None or match.lastgroup is None:
            raise ChartError(f"cannot read {source[position:]!r}")
        tokens.append(_Token(match.lastgroup, match[match.lastgroup]))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens, self.position = tokens, 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ChartError("unexpected end of action")
        self.position += 1
        return token

    def pipeline(self) -> _Pipeline:
        declare, assign = self._declaration()
        commands = [self.command()]
        while (token := self.peek()) is not None and token.text == "|":
            self.next()
            commands.append(self.command())
        return _Pipeline(commands, declare, assign)

    def _declaration(self) -> tuple[list[str], bool]:
        start, names = self.position, []
        while (token := self.peek()) is not None and token.kind == "variable":
            names.append(self.next().text)
            following = self.peek()
            if following is not None and following.text in (":=", "="):
                return names, self.next().text == "="
            if following is None or following.text != ",":
                break
            self.next()
        self.position = start
        return [], False

    def command(self) -> list[_Operand]:
        operands = []
        while (token := self.peek()) is not None and token.text not in ("|", ")"):
            operands.append(self.operand())
        if not operands:
            raise ChartError("empty command")
        return operands

    def operand(self) -> _Operand:
        token = self.next()
        if token.text == "(":
            inner = self.pipeline()
            if self.next().text != ")":
                raise ChartError("unclosed parenthesis")
            return _Operand("pipeline", inner)
        if token.kind == "string":
            text = token.text[1:-1] if token.text[0] == "`" else json.loads(token.text)
            return _Operand("literal", text)
        if token.kind == "number":
            return _Operand("literal", float(token.text) if "." in token.text else int(token.text))
        if token.kind == "ident" and token.text in ("true", "false", "nil"):
            return _Operand("literal", {"true": True, "false": False, "nil": None}[token.text])
        if token.kind in ("field", "variable", "ident"):
            return _Operand(token.kind, token.text)
        raise ChartError(f"unexpected {token.text!r}")


def _split(source: str) -> Iterator[tuple[str, str]]:
    """("text", TEXT) and ("action", BODY) pieces, with ``{{-``/``-}}`` trimming applied."""
    position, trim_next = 0, False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match[1]:
            text = text.rstrip()
        yield "text", text
        yield "action", match[2].strip()
        position, trim_next = match.end(), bool(match[3])
    tail = source[position:]
    yield "text", tail.lstrip() if trim_next else tail


class _Engine:
    def __init__(self) -> None:
        self.defines: dict[str, list[_Node]] = {}

    def parse(self, source: str, name: str) -> list[_Node]:
        pieces = [piece for piece in _split(source) if piece != ("text", "")]
        pieces = [p for p in pieces if not (p[0] == "action" and p[1].startswith("/*"))]
        nodes, stop = self._block(iter(pieces), name)
        if stop is not None:
            raise ChartError(f"{name}: unexpected {{{{ {stop} }}}}")
        return nodes

    def _block(self, pieces: Iterator[tuple[str, str]], name: str) -> tuple[list[_Node], str | None]:
        """Nodes up to the next ``end`` or ``else`` (returned as the stop word), or the file's end."""
        nodes: list[_Node] = []
        for kind, body in pieces:
            if kind == "text":
                nodes.append(_Node("text", text=body))
                continue
            word, _, rest = body.partition(" ")
            if word in ("end", "else"):
                return nodes, body
            if word in ("if", "with", "range"):
                nodes.append(self._control(word, rest, pieces, name))
            elif word == "define":
                inner, stop = self._block(pieces, name)
                if stop != "end":
                    raise ChartError(f"{name}: define without end")
                self.defines[json.loads(rest.strip())] = inner
            elif word == "template":
                parser = _Parser(_tokens(rest))
                template = parser.operand().value
                argument = parser.pipeline() if parser.peek() is not None else None
                nodes.append(_Node("template", name=template, pipeline=argument))
            else:
                nodes.append(_Node("output", pipeline=_Parser(_tokens(body)).pipeline()))
        return nodes, None

    def _control(self, word: str, condition: str, pieces: Iterator[tuple[str, str]], name: str) -> _Node:
        node = _Node(word)
        while True:
            parser = _Parser(_tokens(condition))
            pipeline = parser.pipeline()
            if parser.peek() is not None:
                raise ChartError(f"{name}: trailing {parser.peek()} in {word}")
            body, stop = self._block(pieces, name)
            node.branches.append((pipeline, body))
            if stop == "else":
                body, stop = self._block(pieces, name)
                node.branches.append((None, body))
            elif stop is not None and stop.startswith("else if ") and word == "if":
                condition = stop.removeprefix("else if ")
                continue
            if stop != "end":
                raise ChartError(f"{name}: {word} without end")
            return node

    # -- execution ------------------------------------------------------------------------------

    def execute(self, nodes: list[_Node], dot: Any) -> str:
        return self._run(nodes, dot, [{"$": dot}])

    def _run(self, nodes: list[_Node], dot: Any, scopes: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "output":
                assert node.pipeline is not None
                value = self._pipeline(node.pipeline, dot, scopes)
                if not node.pipeline.declare:
                    out.append(_text(value))
            elif node.kind == "template":
                argument = self._pipeline(node.pipeline, dot, scopes) if node.pipeline else None
                out.append(self._include(node.name, argument))
            else:
                out.append(self._control_run(node, dot, scopes))
        return "".join(out)

    def _control_run(self, node: _Node, dot: Any, scopes: list[dict[str, Any]]) -> str:
        for condition, body in node.branches:
            if condition is None:
                return self._run(body, dot, [*scopes, {}])
            inner: dict[str, Any] = {}
            if node.kind == "range":
                value = self._pipeline(_Pipeline(condition.commands), dot, [*scopes, inner])
                if _truth(value):
                    return self._range(condition.declare, value, body, [*scopes, inner])
                continue
            value = self._pipeline(condition, dot, [*scopes, inner])
            if _truth(value):
                return self._run(body, value if node.kind == "with" else dot, [*scopes, inner])
        return ""

    def _range(self, names: list[str], value: Any, body: list[_Node], scopes: list[dict[str, Any]]) -> str:
        items = sorted(value.items()) if isinstance(value, dict) else list(enumerate(value))
        out = []
        for key, item in items:
            scope: dict[str, Any] = {}
            if len(names) == 1:
                scope[names[0]] = item
            elif len(names) == 2:
                scope[names[0]], scope[names[1]] = key, item
            out.append(self._run(body, item, [*scopes, scope]))
        return "".join(out)

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise ChartError(f"no template {name!r}")
        return self.execute(self.defines[name], dot)

    def _pipeline(self, pipeline: _Pipeline, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = None
        for i, command in enumerate(pipeline.commands):
            value = self._command(command, dot, scopes, [value] if i else [])
        if pipeline.declare:
            if pipeline.assign:
                target = next((s for s in reversed(scopes) if pipeline.declare[0] in s), None)
                if target is None:
                    raise ChartError(f"undefined variable {pipeline.declare[0]}")
                target[pipeline.declare[0]] = value
            else:
                scopes[-1][pipeline.declare[0]] = value
        return value

    def _command(
        self, command: list[_Operand], dot: Any, scopes: list[dict[str, Any]], piped: list[Any]
    ) -> Any:
        head = command[0]
        if head.kind == "ident":
            args = [self._operand(o, dot, scopes) for o in command[1:]] + piped
            return self._call(head.value, args)
        if len(command) > 1 or piped:
            raise ChartError(f"{head.value} is not a function")
        return self._operand(head, dot, scopes)

    def _call(self, name: str, args: list[Any]) -> Any:
        if name == "include":
            return self._include(args[0], args[1])
        if name not in _FUNCTIONS:
            raise ChartError(f"function {name!r} is not known to this renderer")
        try:
            return _FUNCTIONS[name](*args)
        except ChartError:
            raise
        except Exception as err:
            raise ChartError(f"{name}: {err}") from err

    def _operand(self, operand: _Operand, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if operand.kind == "literal":
            return operand.value
        if operand.kind == "pipeline":
            return self._pipeline(operand.value, dot, scopes)
        if operand.kind == "ident":
            return self._call(operand.value, [])  # a function named alone is called with nothing
        if operand.kind == "field":
            return _fields(dot, operand.value)
        name, _, rest = operand.value.partition(".")
        scope = next((s for s in reversed(scopes) if name in s), None)
        if scope is None:
            raise ChartError(f"undefined variable {name}")
        return _fields(scope[name], "." + rest if rest else "")


def _fields(value: Any, path: str) -> Any:
    for name in path.strip(".").split(".") if path.strip(".") else ():
        if value is None:
            raise ChartError(f"nil pointer evaluating {path}")
        if not isinstance(value, dict):
            raise ChartError(f"can't evaluate field {name} in {type(value).__name__}")
        value = value.get(name)
    return value
