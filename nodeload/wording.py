"""Messages name a setting as their reader knows it: the command line's flag (``--platform``)
while the command line runs, the library's option (``StoreOptions.platform``) otherwise.

The command line says so once, when it starts (:func:`for_the_command_line`); the library
never has to know who called it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

_COMMAND_LINE: ContextVar[bool] = ContextVar("nodeload_command_line", default=False)

# A setting -> (its flag, its option in the library).
_NAMES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "name": ("--name", "StoreOptions.name"),
        "platform": ("--platform", "StoreOptions.platform"),
        "snapshotter": ("--snapshotter", "StoreOptions.snapshotter"),
        "socket": ("--containerd-socket", "StoreOptions.socket"),
        "timeout": ("--timeout", "StoreOptions.timeout"),
        "store": ("--store", "StoreOptions.kind"),
        "namespace": ("--namespace", "StoreOptions.namespace"),
        "parallel": ("--parallel", "FanoutOptions.parallel"),
        "retries": ("--retries", "FanoutOptions.retries"),
        "seeds": ("--seeds", "FanoutOptions.seeds"),
        "export": ("--export", "SourceOptions.export"),
        "no_tls_verify": ("--src-tls-verify=false", "SourceOptions(tls_verify=False)"),
        "source_socket": ("--source-socket", "SourceOptions.containerd_address"),
        "source_namespace": ("--source-namespace", "SourceOptions.containerd_namespace"),
        "listen": ("--listen", "ServeOptions.listen"),
        "force": ("--force", "RemoveOptions.force"),
        "known_hosts": ("--known-hosts", "SSHOptions.known_hosts"),
        "sudo": ("--sudo", "NodeSpec.sudo"),
        "node": ("--node", "NodeSelection.names"),
        "all_nodes": ("--all-nodes", "NodeSelection.all_nodes"),
        "inventory": ("--inventory", "NodeSelection.inventory"),
        "limit": ("--limit", "NodeSelection.limit"),
        "kubeconfig": ("--kubeconfig", "NodeSelection.kubeconfig"),
        "context": ("--context", "NodeSelection.context"),
        "selector": ("-l/--selector", "NodeSelection.selector"),
        "exclude_control_plane": ("--exclude-control-plane", "NodeSelection.exclude_control_plane"),
        "address_type": ("--address-type", "NodeSelection.address_type"),
        "reach": ("--reach", "NodeSelection.reach"),
        "agent_namespace": ("--agent-namespace", "NodeSelection.agent_namespace"),
        "kind_cluster": ("--kind-cluster", "NodeSelection.kind_cluster"),
        "k3d_cluster": ("--k3d-cluster", "NodeSelection.k3d_cluster"),
        "ssh_user": ("--ssh-user", "NodeSelection.ssh_user"),
        "debug": ("--debug", "DEBUG logging of the 'nodeload' logger"),
    }
)


def setting(key: str, value: object = None) -> str:
    """How the reader names the setting ``key`` (given ``value``: set to it), e.g. ``--name app:v1``
    on the command line, ``StoreOptions.name='app:v1'`` in the library."""
    flag, option = _NAMES[key]
    if _COMMAND_LINE.get():
        return flag if value is None else f"{flag} {value}"
    return option if value is None else f"{option}={value!r}"


@contextlib.contextmanager
def for_the_command_line() -> Iterator[None]:
    """Within: messages name settings by their flags (threads and tasks started here too)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)
