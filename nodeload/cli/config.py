"""Defaults for the command line from a TOML file: any long option of any command.

``$NODELOAD_CONFIG``, else ``$XDG_CONFIG_HOME/nodeload/config.toml`` (``~/.config`` without it).
``[defaults]`` holds options shared by commands (each command that has the option takes it),
``[push]``, ``[nodes]``, ``[cache.prune]``... one command's; a command's table wins over
``[defaults]``. Keys are the long options' names (``ssh-config``, ``all-nodes``), values what the
option takes, converted and checked by the option's own parser, so an option added to the
parser is configurable with no code here.

Precedence: flags > environment (the variables of :data:`ENVIRONMENT`) > this file > built-in
defaults. The file's values become the parser's defaults, so a flag replaces them; a repeatable
option's flags replace the file's list rather than adding to it (:func:`parse`).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

# Options whose built-in default an environment variable sets: a set variable beats the file.
# dest -> variable.
ENVIRONMENT: Mapping[str, str] = MappingProxyType({"persist": "NODELOAD_PERSIST"})
SHARED = "defaults"  # the table of options shared by every command that has them

_FLAG_ACTIONS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
)
_SKIPPED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


class ConfigError(Exception):
    """The config file cannot be used: it names the file, the line and key, and what is accepted."""


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from."""

    source: str  # "flag", "environment", "config", "default"
    where: str | None = None  # the variable, or the file

    def to_json(self) -> dict[str, str | None]:
        return {"from": self.source, "where": self.where}

    def __str__(self) -> str:
        text = {"flag": "flag", "environment": "environment", "config": "config file", "default": "default"}
        return f"{text[self.source]} {self.where}" if self.where else text[self.source]


@dataclass
class Layers:
    """What the config file and the environment set, for reporting origins."""

    file: Path | None = None
    # command path -> {dest: the key that set it}
    from_file: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)
    from_environment: dict[str, str] = field(default_factory=dict)  # dest -> variable
    command: tuple[str, ...] = ()  # the command run
    # The dests the command line gave, with their values: asked only when needed (it parses the
    # command line a second time).
    given_values: Callable[[], Mapping[str, Any]] = field(default=dict, repr=False)

    @property
    def given(self) -> frozenset[str]:
        """The dests given on the command line."""
        return frozenset(self.given_values())

    def origin(self, dest: str) -> Origin:
        """Where the run's value of ``dest`` came from."""
        if dest in self.given:
            return Origin("flag")
        if dest in self.from_environment:
            return Origin("environment", self.from_environment[dest])
        if dest in self.from_file.get(self.command, {}):
            return Origin("config", str(self.file))
        return Origin("default")

    def note(self) -> str:
        """For a usage error: which settings the file gave the command (a flag may clash with them)."""
        keys = [key for dest, key in self.from_file.get(self.command, {}).items() if dest not in self.given]
        return f" (the config file {self.file} sets {', '.join('--' + k for k in keys)})" if keys else ""


def config_path() -> Path | None:
    """The config file to read; None when there is none (a missing default file is no error)."""
    named = os.environ.get("NODELOAD_CONFIG")
    if named is not None:
        return Path(named).expanduser() if named else None
    home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    default = Path(home) / "nodeload" / "config.toml"
    return default if default.is_file() else None


def parse(
    make_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str],
    path: Path | None = None,
    *,
    read_file: bool = True,
) -> argparse.Namespace:
    """``argv`` parsed with the config file's defaults (``path``, else :func:`config_path`'s;
    none without ``read_file``); ``args.origins`` says where each value came from.

    Raises:
        ConfigError: for a file that cannot be read or holds what no option takes.
    """
    parser = make_parser()
    layers = apply_file(parser, path) if read_file else Layers()
    layers.from_environment = {dest: name for dest, name in ENVIRONMENT.items() if os.environ.get(name)}
    args = parser.parse_args(argv)
    layers.command = command_of(parser, args)
    layers.given_values = functools.cache(lambda: given_on_command_line(make_parser, argv))
    for dest in layers.from_file.get(layers.command, {}):  # flags replace the file's list
        if isinstance(getattr(args, dest, None), list) and dest in layers.given_values():
            setattr(args, dest, layers.given_values()[dest])
    args.origins = layers
    return args


def command_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    """The command path ``args`` ran: ``("push",)``, ``("cache", "prune")``..."""
    path: tuple[str, ...] = ()
    while True:
        chosen = [
            (action.dest, action.choices)
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
        ]
        if not chosen:
            return path
        dest, choices = chosen[0]
        name = getattr(args, dest, None)
        if name not in choices:
            return path
        path, parser = (*path, name), choices[name]


def apply_file(parser: argparse.ArgumentParser, path: Path | None = None) -> Layers:
    """Make the config file's values (``path``, else :func:`config_path`'s) ``parser``'s defaults."""
    path = path or config_path()
    layers = Layers(file=path)
    if path is None:
        return layers
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _Reader(path, text, layers).apply(parser, document)
    return layers


def given_on_command_line(
    make_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> dict[str, Any]:
    """The dests ``argv`` sets itself, with their values: ``argv`` parsed again with no defaults."""
    parser = make_parser()
    for each in parsers(parser).values():
        each._defaults.clear()
        for action in each._actions:
            if not isinstance(action, _SKIPPED):
                action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return vars(given)


def parsers(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """``parser`` and every (sub)command's parser, by command path: ``()``, ``("push",)``..."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(path: tuple[str, ...], each: argparse.ArgumentParser) -> None:
        found[path] = each
        for name, sub in subcommands(each).items():
            walk((*path, name), sub)

    walk((), parser)
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name (aliases included)."""
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's long options by name without ``--`` (aliases included), as the file spells them."""
    return {
        flag[2:]: action
        for action in parser._actions
        if not isinstance(action, _SKIPPED)
        for flag in action.option_strings
        if flag.startswith("--")
    }


class _Reader:
    """One file's tables checked against the parsers and turned into their defaults."""

    def __init__(self, path: Path, text: str, layers: Layers) -> None:
        self.path, self.lines, self.layers = path, text.splitlines(), layers
        self.builtin: dict[int, Any] = {}  # id(action) -> its default before the file's

    def apply(self, parser: argparse.ArgumentParser, document: Mapping[str, Any]) -> None:
        commands = parsers(parser)
        self.builtin = {id(a): a.default for each in commands.values() for a in each._actions}
        shared = document.get(SHARED, {})
        if not isinstance(shared, dict):
            raise self.error((), SHARED, f"[{SHARED}] must be a table of settings")
        tables = dict(self._tables(document, parser, ()))
        known = {key for each in commands.values() for key in options(each)}
        for key in shared:
            if key not in known:
                raise self.unknown((SHARED,), key, sorted(known))
        for command, each in commands.items():
            if not command:
                continue
            own = tables.get(command, {})
            self._set(each, command, {k: ((SHARED,), v) for k, v in shared.items() if k in options(each)})
            self._set(each, command, {k: (command, v) for k, v in own.items()})

    def _tables(
        self, table: Mapping[str, Any], parser: argparse.ArgumentParser, path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
        """(command path, its settings) of every command table; what is neither is an error."""
        commands = subcommands(parser)
        settings: dict[str, Any] = {}
        for key, value in table.items():
            if not path and key == SHARED:
                continue
            if key in commands and isinstance(value, dict):
                yield from self._tables(value, commands[key], (*path, key))
            elif not path:
                names = ", ".join(f"[{name}]" for name in commands)
                raise self.error(
                    (), key, f"{key!r} is not a command: settings go under [{SHARED}] or one of {names}"
                )
            else:
                settings[key] = value
        if path:
            yield path, settings

    def _set(
        self,
        parser: argparse.ArgumentParser,
        command: tuple[str, ...],
        settings: Mapping[str, tuple[tuple[str, ...], Any]],
    ) -> None:
        accepted = options(parser)
        defaults: dict[str, Any] = {}
        for key, (table, value) in settings.items():
            action = accepted.get(key)
            if action is None:
                raise self.unknown(table, key, sorted(accepted))
            converted = self._value(action, table, key, value)  # checked even where unused
            variable = ENVIRONMENT.get(action.dest)
            if variable and os.environ.get(variable):  # the environment's value stands
                continue
            defaults[action.dest] = converted
            self.layers.from_file.setdefault(command, {})[action.dest] = key
        if defaults:
            parser.set_defaults(**defaults)

    def _value(self, action: argparse.Action, table: tuple[str, ...], key: str, value: Any) -> Any:
        """``value`` as the option would have it from the command line, or a ConfigError."""
        if isinstance(action, _FLAG_ACTIONS):
            if not isinstance(value, bool):
                raise self.error(table, key, f"{key} = {value!r}: expected true or false")
            return action.const if value else self.builtin.get(id(action))
        if isinstance(action, argparse._AppendAction) or action.nargs not in (None, "?"):
            items = value if isinstance(value, list) else [value]
            return [self._one(action, table, key, item) for item in items]
        return self._one(action, table, key, value)

    def _one(self, action: argparse.Action, table: tuple[str, ...], key: str, value: Any) -> Any:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float) and action.type is not None:
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise self.error(table, key, f"{key} = {value!r}: expected {_expected(action)}")
        converter = action.type if callable(action.type) else str
        try:
            converted = converter(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            why = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"expected {_expected(action)}"
            raise self.error(table, key, f"{key} = {value!r}: {why}") from exc
        if action.choices is not None and converted not in action.choices:
            raise self.error(table, key, f"{key} = {value!r}: one of {', '.join(map(str, action.choices))}")
        if isinstance(converted, Path):  # a file named in the file: next to it, as ~ means home
            converted = self.path.parent / converted.expanduser()
        return converted

    def unknown(self, table: tuple[str, ...], key: str, accepted: Sequence[str]) -> ConfigError:
        close = difflib.get_close_matches(key.replace("_", "-"), accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"[{'.'.join(table)}]"
        return self.error(
            table, key, f"unknown setting {key!r}{hint}; {where} accepts: {', '.join(accepted)}"
        )

    def error(self, table: tuple[str, ...], key: str, message: str) -> ConfigError:
        line = self._line(table, key)
        at = f"line {line}: " if line else ""
        where = f"[{'.'.join(table)}] " if table else ""
        return ConfigError(f"{self.path}: {at}{where}{message}")

    def _line(self, table: tuple[str, ...], key: str) -> int | None:
        """The line that sets ``key`` in ``table`` (a best effort: the message is right without it)."""
        current: tuple[str, ...] = ()
        for number, line in enumerate(self.lines, 1):
            header = re.fullmatch(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?", line)
            if header:
                current = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
                if not table and current == (key,):
                    return number
                continue
            found = re.match(r"\s*[\"']?([A-Za-z0-9_.-]+)[\"']?\s*=", line)
            if found and current == table and found.group(1) == key:
                return number
        return None


def _expected(action: argparse.Action) -> str:
    if action.type is int:
        return "an integer"
    if action.type is None:
        return "a string"
    if action.metavar:
        return f"a value of the form {action.metavar}"
    return "a string"
