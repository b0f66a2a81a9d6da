"""An inventory read by Ansible itself, where ansible-core is installed.

``ansible-inventory -i INV --list`` gives every host's variables after Ansible's own reading
(inventory plugins and scripts, ``group_vars/`` and ``host_vars/``, vault, precedence), and
``ansible -i INV all --list-hosts --limit PATTERN`` which hosts a limit selects, in the order
Ansible would work on them. Both run at once. Two settings are nodeload's: a pattern that
matches nothing is an error (``ANSIBLE_HOST_PATTERN_MISMATCH=error``: Ansible only warns, and a
mistyped name would push to fewer nodes), and so is an inventory Ansible cannot parse
(``ANSIBLE_INVENTORY_UNPARSED_FAILED``: Ansible would go on with none).

What a host's variables mean is decided as for the built-in reader
(:mod:`~nodeload.nodes.inventory.hostvars`), so both give the same NodeSpec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nodeload.errors import NodeSourceError
from nodeload.jsondoc import mapping
from nodeload.nodes.inventory.hostvars import _HostVars, _node_spec, _pick_used
from nodeload.nodes.inventory.patterns import _did_you_mean, _sample
from nodeload.nodes.spec import NodeSpec
from nodeload.wording import setting

_SECONDS = 120.0
_ENV = {
    "ANSIBLE_HOST_PATTERN_MISMATCH": "error",
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_FORCE_COLOR": "0",
    "PYTHONWARNINGS": "ignore",
}


def ansible_tools() -> tuple[str, str] | None:
    """``ansible-inventory`` and ``ansible``: on ``$PATH``, else beside this Python (a venv that
    has ansible-core but is not activated). None when either is missing."""
    found = []
    for name in ("ansible-inventory", "ansible"):
        beside = Path(sys.executable).parent / name
        tool = shutil.which(name) or (str(beside) if os.access(beside, os.X_OK) else None)
        if tool is None:
            return None
        found.append(tool)
    return found[0], found[1]


def select_with_ansible(
    path: Path,
    tools: tuple[str, str],
    *,
    all_nodes: bool = False,
    names: Sequence[str] = (),
    limit: str | None = None,
) -> list[NodeSpec]:
    """The nodes of ``path`` as Ansible reads it, selected as :meth:`Inventory.select` selects.

    Raises:
        NodeSourceError: Ansible cannot read the inventory or the limit, a name is unknown, or
            nothing is selected.
    """
    if not path.exists():
        raise NodeSourceError(f"inventory {path} does not exist")
    named = list(dict.fromkeys([names] if isinstance(names, str) else names))
    if not (all_nodes or named or limit is not None):
        raise NodeSourceError(
            f"no host selected from {path}: select all, name hosts or give {setting('limit')}"
        )
    inventory_tool, ansible = tools
    limited = ["--limit", limit] if limit is not None else []
    listing = [inventory_tool, "-i", str(path), "--list", *([] if named else limited)]
    ordering = [ansible, "-i", str(path), "all", "--list-hosts", *limited]
    with ThreadPoolExecutor(max_workers=2) as pool:
        listed, ordered = pool.map(lambda argv: _run(argv, path, limit), (listing, ordering))
    document = _document(listed, path)
    hostvars = mapping(mapping(document.get("_meta")).get("hostvars"))
    known = _hosts_of(document)
    selected = _list_hosts(ordered)
    for name in named:
        if name not in known:
            hint = _did_you_mean(name, known)
            listing_text = f"its hosts include {_sample(known)}" if known else "it has no hosts"
            raise NodeSourceError(f"no host {name!r} in inventory {path}{hint}; {listing_text}")
    if named and not all_nodes:
        chosen = named if limit is None else [host for host in named if host in set(selected)]
    else:
        chosen = selected
    if not chosen:
        if limit is not None:
            among = " among the named hosts" if named and not all_nodes else ""
            raise NodeSourceError(f"{setting('limit')} {limit!r} matches no host{among} in {path}")
        raise NodeSourceError(f"inventory {path} has no hosts")
    variables = {host: _pick_used([dict(mapping(hostvars.get(host)))]) for host in chosen}
    return [_node_spec(_HostVars(path, host, variables[host]), Path.cwd()) for host in chosen]


def _run(argv: list[str], path: Path, limit: str | None) -> str:
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, **_ENV},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_SECONDS,
        )
    except subprocess.TimeoutExpired as err:
        raise NodeSourceError(f"{Path(argv[0]).name} -i {path} took more than {_SECONDS:g} s") from err
    except OSError as err:
        raise NodeSourceError(f"cannot run {argv[0]}: {err.strerror or err}") from err
    if done.returncode != 0:
        said = _errors(done.stderr) or f"exit status {done.returncode}"
        where = f"{setting('limit')} {limit!r}: " if "pattern" in said and limit is not None else ""
        raise NodeSourceError(f"{where}{Path(argv[0]).name} -i {path}: {said}")
    return done.stdout


def _errors(stderr: str) -> str:
    """Ansible's error lines, without its banners and tracebacks."""
    lines = [line.strip() for line in stderr.splitlines()]
    errors = [line.split(":", 1)[1].strip() for line in lines if line.startswith(("[ERROR]:", "ERROR!"))]
    return "; ".join(errors) or "; ".join(line for line in lines if line)[:500]


def _document(text: str, path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as err:
        raise NodeSourceError(f"ansible-inventory -i {path} printed no JSON inventory: {err}") from err
    return mapping(document)


def _hosts_of(document: Mapping[str, Any]) -> list[str]:
    """Every host the listing names, in group order then host order."""
    hosts: dict[str, None] = dict.fromkeys(mapping(mapping(document.get("_meta")).get("hostvars")))
    for name, group in document.items():
        if name != "_meta":
            hosts.update(dict.fromkeys(str(h) for h in mapping(group).get("hosts") or ()))
    return list(hosts)


def _list_hosts(text: str) -> list[str]:
    """The hosts ``ansible --list-hosts`` prints: indented names under ``hosts (N):``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("hosts (")), len(lines))
    return [line.strip() for line in lines[start + 1 :] if line.strip()]
