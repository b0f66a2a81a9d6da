"""``group_vars/`` and ``host_vars/``: the variable files Ansible reads beside an inventory.

As ansible-core's ``host_group_vars`` plugin: for a group or host NAME, the first of
``DIR/NAME``, ``NAME.yml``, ``NAME.yaml``, ``NAME.json`` that exists; a directory is read
whole (files sorted by name, subdirectories without an extension walked, hidden files and
``~`` backups skipped, only files without an extension or ending in ``.yml``, ``.yaml`` or
``.json``), each file's mapping replacing the keys of the ones before. Two directories hold
them: the inventory's own and the current directory (where ``ansible``, with no playbook,
looks too), the latter winning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.building import Vars
from nodeload.nodes.inventory.reading import _load_yaml, _read

_EXTENSIONS = (".yml", ".yaml", ".json")
_VAULT = "$ANSIBLE_VAULT;"


@dataclass
class VarsDirectory:
    """The variables one directory's ``group_vars/`` and ``host_vars/`` give each group and host."""

    base: Path
    groups: dict[str, Vars] = field(default_factory=dict)
    hosts: dict[str, Vars] = field(default_factory=dict)


def vars_directories(inventory: Path, groups: list[str], hosts: list[str]) -> list[VarsDirectory]:
    """The variable files of ``groups`` and ``hosts``: the inventory's directory first, then the
    current directory (when it is another).

    Raises:
        NodeSourceError: a file is malformed, not a mapping, or encrypted with ansible-vault.
    """
    bases = dict.fromkeys([os.path.realpath(inventory.absolute().parent), os.path.realpath(os.getcwd())])
    found = []
    for base in bases:
        directory = VarsDirectory(Path(base))
        directory.groups = _entities(Path(base, "group_vars"), groups)
        directory.hosts = _entities(Path(base, "host_vars"), hosts)
        if directory.groups or directory.hosts:
            found.append(directory)
    return found


def _entities(directory: Path, names: list[str]) -> dict[str, Vars]:
    if not directory.is_dir():
        return {}
    loaded = {}
    for name in names:
        if name.startswith(os.sep):  # as Ansible: chroot-like host names have no file
            continue
        files = _files_of(directory, name)
        if files:
            loaded[name] = _merged(files)
    return loaded


def _files_of(directory: Path, name: str) -> list[Path]:
    for suffix in ("", *_EXTENSIONS):
        path = directory / (name + suffix)
        if path.is_dir():
            return _directory_files(path) if not suffix else []
        if path.exists():
            return [path]
    return []


def _directory_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        path, extension = directory / entry, os.path.splitext(entry)[1]
        if path.is_dir() and not extension:
            found += _directory_files(path)
        elif path.is_file() and (not extension or extension in _EXTENSIONS):
            found.append(path)
    return found


def _merged(files: list[Path]) -> Vars:
    merged: Vars = {}
    for path in files:
        text = _read(path)
        if text.lstrip().startswith(_VAULT):
            raise NodeSourceError(
                f"{path} is encrypted with ansible-vault: install ansible-core (pip install ansible-core), "
                "which nodeload then reads the inventory through"
            )
        data = _load_yaml(text, path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise NodeSourceError(f"{path}: variables must be a mapping, not {type(data).__name__}")
        merged.update({str(key): value for key, value in data.items()})
    return merged
