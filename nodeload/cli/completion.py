"""Shell completion through argcomplete: ``nodeload completion bash|zsh|fish`` prints the script
to source; each Tab then runs ``nodeload`` with argcomplete's variables set, which answers from
the parser (commands, options, choices) and, for image and node arguments, from the local Docker
engine and the current node selection (the config file's included). Like ``--help``, it imports
neither grpc, asyncssh nor the Kubernetes client, except to list a cluster's nodes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

# How long a completion may wait for the engine or the node source before offering nothing.
ENGINE_SECONDS = 1.0
NODES_SECONDS = 5.0  # a cluster: the Kubernetes client alone takes ~1 s to import
NODES_SECONDS_VARIABLE = "NODELOAD_COMPLETION_TIMEOUT"  # for a slower cluster or inventory


def shell_script(shell: str, prog: str = "nodeload") -> str:
    """The script that makes ``shell`` complete ``prog``'s command lines."""
    import argcomplete

    return str(argcomplete.shellcode([prog], shell=shell))


def complete(make_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Answer the shell's completion request (argcomplete's environment) and exit."""
    import argcomplete

    from nodeload.cli.config import ConfigError, apply_file, parsers

    parser = make_parser()
    # The file's node selection is the one whose nodes are offered; what is wrong with the file
    # the command itself will say.
    with contextlib.suppress(ConfigError):
        apply_file(parser)
    for each in parsers(parser).values():
        for action in each._actions:
            completer = _completer_for(action)
            if completer is not None:
                action.completer = completer  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser)
    sys.exit(0)  # not reached: argcomplete exits once it has answered


def _completer_for(action: argparse.Action) -> Callable[..., list[str]] | None:
    if not action.option_strings and (action.metavar == "IMAGE" or action.dest in ("image", "images")):
        return complete_images
    if "--node" in action.option_strings:
        return complete_nodes
    if "--limit" in action.option_strings:
        return complete_patterns
    return None


def complete_images(prefix: str, **_: Any) -> list[str]:
    """The local Docker engine's ``repo:tag`` names."""
    from nodeload.dockerapi import image_names

    return _starting(prefix, image_names(timeout=ENGINE_SECONDS))


def complete_nodes(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The node names the current selection offers (inventory hosts, a cluster's nodes), else the
    ssh config's host aliases."""
    return _starting(prefix, _bounded(lambda: candidate_nodes(parsed_args), _nodes_seconds()))


def complete_patterns(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """An inventory's groups and hosts, for ``--limit``."""
    return _starting(prefix, _bounded(lambda: _inventory_names(parsed_args), _nodes_seconds()))


def candidate_nodes(args: argparse.Namespace) -> list[str]:
    """Every node the selection ``args`` describes could name, as ``--node`` takes it."""
    from nodeload.cli.common import node_selection
    from nodeload.errors import NodeloadError
    from nodeload.nodes.select import select_nodes

    given = node_selection(args)
    if given.kind == "listed":  # SSH destinations: those the config file lists, the ssh config's hosts
        from nodeload.transports.ssh_resolve import ResolveSettings, config_hosts

        hosts = config_hosts(ResolveSettings(ssh_config=getattr(args, "ssh_config", None)))
        return list(dict.fromkeys([*given.names, *hosts]))
    every = dataclasses.replace(given, names=(), all_nodes=True, limit=None, find_mirrors=False)
    if every.kind == "inventory":
        # nodeload's reader first: it agrees with Ansible's (tests/integration) and answers in
        # milliseconds where ansible-inventory takes a second or more; Ansible for what it cannot read.
        try:
            return [node.name for node in select_nodes(dataclasses.replace(every, use_ansible=False))]
        except NodeloadError:
            pass
    return [node.name for node in select_nodes(every, lambda _: None)]


def _inventory_names(args: argparse.Namespace) -> list[str]:
    if getattr(args, "inventory", None) is None:
        return []
    from nodeload.nodes.inventory import load_inventory

    groups: list[str] = []
    # nodeload's reader knows the groups of INI and YAML files; those of Ansible's plugins are not offered.
    with contextlib.suppress(Exception):
        groups = [g for g in load_inventory(args.inventory).groups() if g not in ("all", "ungrouped")]
    return [*groups, *candidate_nodes(args)]


def _nodes_seconds() -> float:
    try:
        return float(os.environ.get(NODES_SECONDS_VARIABLE) or NODES_SECONDS)
    except ValueError:
        return NODES_SECONDS


def _bounded(find: Callable[[], Iterable[str]], seconds: float) -> list[str]:
    """What ``find`` returns within ``seconds``; nothing if it fails or takes longer (the shell
    is waiting: a thread left behind ends with the process)."""
    found: list[str] = []

    def run() -> None:
        with contextlib.suppress(Exception):  # a completion offers nothing rather than an error
            found.extend(find())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    return list(found) if not worker.is_alive() else []


def _starting(prefix: str, names: Iterable[str]) -> list[str]:
    return [name for name in names if name.startswith(prefix)]
