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

This is the reader for machines without Ansible: where ansible-core is installed, inventories
are read through it (:mod:`~nodeload.nodes.inventory.ansible`), and the test suite holds this
reader to Ansible's answers (host order, patterns, subscripts, ``group_vars/`` and
``host_vars/`` beside the inventory and in the current directory, the first ``host:port``).
Not evaluated here: inventory directories, dynamic inventory scripts, plugin configurations and
vault (each says to install ansible-core), and Jinja templates: a variable nodeload needs that
holds ``{{ ... }}`` is an error, not an address.

The file is untrusted input: its size, host ranges, YAML alias fan-out and group nesting
are bounded, and every defect is a :class:`~nodeload.errors.NodeSourceError` naming the
file and the line or YAML path.

Where the parts live: :mod:`~nodeload.nodes.inventory.reading` reads the file (and tells
YAML from INI); :mod:`~nodeload.nodes.inventory.ini` and
:mod:`~nodeload.nodes.inventory.yaml_groups` parse the two formats into a builder;
:mod:`~nodeload.nodes.inventory.building` settles the implicit groups and checks the group
graph; :mod:`~nodeload.nodes.inventory.model` holds :class:`Inventory` (variable precedence
and selection); :mod:`~nodeload.nodes.inventory.patterns` expands host patterns and
``--limit`` patterns; :mod:`~nodeload.nodes.inventory.hostvars` turns a host's variables
into a NodeSpec; :mod:`~nodeload.nodes.inventory.files` reads ``group_vars/`` and ``host_vars/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory.building import MAX_ENTRIES
from nodeload.nodes.inventory.files import vars_directories
from nodeload.nodes.inventory.ini import _from_ini
from nodeload.nodes.inventory.model import Inventory
from nodeload.nodes.inventory.patterns import MAX_RANGE_HOSTS
from nodeload.nodes.inventory.reading import MAX_INVENTORY_BYTES, _load_yaml, _read, _sniff_yaml
from nodeload.nodes.inventory.yaml_groups import MAX_GROUP_DEPTH, _from_yaml

__all__ = [
    "MAX_ENTRIES",
    "MAX_GROUP_DEPTH",
    "MAX_INVENTORY_BYTES",
    "MAX_RANGE_HOSTS",
    "Inventory",
    "load_inventory",
]


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
    if text.startswith("#!") and os.access(path, os.X_OK):
        raise NodeSourceError(
            f"inventory {path} is a script, which only Ansible runs: install ansible-core "
            "(pip install ansible-core) and nodeload reads it through ansible-inventory"
        )
    if path.suffix.lower() in (".yml", ".yaml"):
        builder = _from_yaml(_load_yaml(text, path), path)
    else:
        document = _sniff_yaml(text)
        builder = _from_ini(text, path) if document is None else _from_yaml(document, path)
    inventory = builder.build()
    inventory.vars_dirs = vars_directories(path, list(builder.groups), list(builder.hosts))
    return inventory
