"""The README's usage block lists exactly the options ``nodeload push --help`` offers, and the
other commands' one-line summaries name only options those commands take."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from nodeload.cli.arguments import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
# An option at the start of a usage line: "  --node NODE", "  -i, --identity FILE".
_LISTED = re.compile(r"^ {2}(-\w|--[\w-]+)(?:, (--[\w-]+))?", re.MULTILINE)
_MENTIONED = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _usage_block() -> str:
    text = README.read_text()
    start = text.index("## Usage")
    block = text[start:].split("```")[1]
    assert block.lstrip().startswith("nodeload push"), "the usage block starts with nodeload push"
    return block


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(verbs.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}


def test_push_options_are_the_readme_usage() -> None:
    block = _usage_block()
    push_part = block.split("\nnodeload serve")[0]
    listed = {o for match in _LISTED.finditer(push_part) for o in match.groups() if o}
    offered = _options(_commands()["push"])
    assert offered - listed == set(), f"in push --help but not in the README's usage: {offered - listed}"
    assert listed - offered == set(), f"in the README's usage but not in push --help: {listed - offered}"


def test_other_commands_summaries_name_real_options() -> None:
    commands = _commands()
    summaries = [line for line in _usage_block().splitlines() if re.match(r"nodeload (?!push)\w", line)]
    assert summaries, "the usage block summarises the other commands"
    for line in summaries:
        verb = line.split()[1]
        words = line.split("(see")[0].split(" -- ")[0]
        mentioned = set(_MENTIONED.findall(words))
        parser = commands[verb]
        for sub in parser._actions:  # "cache prune": options of the sub-command
            if isinstance(sub, argparse._SubParsersAction):
                parser = sub.choices[line.split()[2]]
        assert mentioned <= _options(parser), f"{line.strip()}: {mentioned - _options(parser)} unknown"
