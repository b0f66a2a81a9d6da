"""``nodeload nodes`` (and ``push --dry-run``): every selected node, resolved exactly as a push
would reach it, and with ``--check`` reached (nothing is written)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeload.cli.common import selected_nodes, ssh_options

if TYPE_CHECKING:
    from rich.console import Console

    from nodeload.cli.config import Origin
    from nodeload.nodes.spec import NodeSpec
    from nodeload.session import Session
    from nodeload.transports.ssh import SSHOptions

_CHECK_PARALLEL = 8
_SELECTION_GROUPS = ("nodes", "ssh")  # the argument groups that choose the nodes and how to reach them


@dataclass
class NodeView:
    """One node as ``nodes`` shows it."""

    node: NodeSpec
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it cannot be resolved (or, checked, reached)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node.name, "ok": self.error is None, "error": self.error, **self.fields}


def run_nodes(args: argparse.Namespace, err: Console, session: Session | None = None) -> int:
    """Resolve (and with ``--check`` reach) each selected node; print them; the exit status."""
    ssh = ssh_options(args, err)
    nodes = selected_nodes(args, err)
    views = [describe(node, ssh, args) for node in nodes]
    if getattr(args, "check", False):
        coroutine = _check_all(views, ssh, args)
        if session is not None:
            session.run(coroutine)
        else:
            asyncio.run(coroutine)
    reader = _inventory_reader(args)
    settings = selection_settings(args)
    if args.json:
        document = {
            "inventory_reader": reader,
            "config_file": _config_file(args),
            "settings": {s.name: {"value": s.value, **s.origin.to_json()} for s in settings},
            "error": None,
            "nodes": [v.to_json() for v in views],
        }
        print(json.dumps(document, indent=2, default=str))
    else:
        _print_settings(settings, _config_file(args))
        _print(views, reader)
    return 0 if all(view.error is None for view in views) else 1


def describe(node: NodeSpec, ssh: SSHOptions, args: argparse.Namespace) -> NodeView:
    """What a push would do to reach ``node``: its route, socket candidates, namespace."""
    view = NodeView(node)
    sockets = [args.containerd_socket] if args.containerd_socket else list(_socket_candidates(node))
    view.fields = {
        "reach": node.reach,
        "namespace": node.namespace or args.namespace,
        "containerd_sockets": sockets,
        "platform": str(node.platform) if node.platform else None,
        "sudo": node.become,
    }
    if node.problem:
        view.error = node.problem
    elif node.reach == "ssh":
        view.fields["ssh"] = _route(node, ssh, view)
    elif node.reach == "docker":
        view.fields["container"] = node.container
    elif node.reach == "agent" and node.kube is not None:
        kube = node.kube
        view.fields["kubernetes"] = {
            "context": kube.context,
            "server": kube.server,
            "user": kube.user,
            "agent_namespace": kube.agent_namespace,
            "instead_of_ssh": kube.instead_of_ssh,
        }
    return view


def _route(node: NodeSpec, ssh: SSHOptions, view: NodeView) -> dict[str, Any] | None:
    """The node's SSH route, from the very transport a push would use."""
    from nodeload.errors import NodeloadError
    from nodeload.transports.ssh import SSHTransport

    try:
        route = SSHTransport(node, ssh).route
    except NodeloadError as exc:
        view.error = str(exc)
        return None
    return {
        "resolver": route.resolver,
        "notes": list(route.notes),
        "jumps": [hop.to_json() for hop in route.jumps],
        **route.node.to_json(),
        "known_hosts": str(ssh.known_hosts) if ssh.known_hosts else None,
        "host_keys_checked": ssh.verify_host_keys,
    }


def _socket_candidates(node: NodeSpec) -> list[str]:
    from nodeload.containerd.connect import DEFAULT_SOCKETS

    return list(dict.fromkeys((*node.sockets, *DEFAULT_SOCKETS)))


def _inventory_reader(args: argparse.Namespace) -> str | None:
    if getattr(args, "inventory", None) is None:
        return None
    from nodeload.nodes.select import NodeSelection, inventory_reader

    return inventory_reader(NodeSelection(inventory=args.inventory))


@dataclass(frozen=True)
class Setting:
    """One option of the command, its value and where that came from."""

    name: str  # the long option, without --
    value: Any
    origin: Origin


def selection_settings(args: argparse.Namespace) -> list[Setting]:
    """Every option of the command's node selection, and any other option not at its built-in
    default, with where its value came from."""
    from nodeload.cli.arguments import build_parser
    from nodeload.cli.config import options, parsers

    layers = getattr(args, "origins", None)
    if layers is None:  # parsed without nodeload.cli.config (a script's own namespace)
        return []
    parser = parsers(build_parser())[layers.command]
    selection = {
        id(action)
        for group in parser._action_groups
        if group.title in _SELECTION_GROUPS
        for action in group._group_actions
    }
    found, seen = [], set()
    for name, action in options(parser).items():
        origin = layers.origin(action.dest)
        if action.dest in seen or (id(action) not in selection and origin.source == "default"):
            continue
        seen.add(action.dest)
        value = getattr(args, action.dest, None)
        found.append(Setting(name, str(value) if isinstance(value, Path) else value, origin))
    return found


def _config_file(args: argparse.Namespace) -> str | None:
    layers = getattr(args, "origins", None)
    return str(layers.file) if layers is not None and layers.file is not None else None


# -- --check ------------------------------------------------------------------------------------


async def _check_all(views: list[NodeView], ssh: SSHOptions, args: argparse.Namespace) -> None:
    limit = asyncio.Semaphore(max(1, getattr(args, "parallel", _CHECK_PARALLEL)))

    async def one(view: NodeView) -> None:
        if view.error is not None:
            return
        async with limit:
            view.fields["check"] = await _check(view, ssh, args)

    await asyncio.gather(*(one(view) for view in views))


async def _check(view: NodeView, ssh: SSHOptions, args: argparse.Namespace) -> dict[str, Any]:
    from nodeload.errors import NodeloadError

    try:
        found = await reach(view.node, ssh, args.containerd_socket, args.timeout)
    except NodeloadError as exc:
        view.error = str(exc)
        return {"reachable": False}
    except Exception as exc:  # a check reports, it does not crash
        view.error = f"internal error: {type(exc).__name__}: {exc}"
        return {"reachable": False}
    return {"reachable": True, **found}


async def reach(node: NodeSpec, ssh: SSHOptions, socket: str | None, timeout: float) -> dict[str, Any]:
    """Connect to ``node`` and its containerd as a push would (the same opener, so the same
    strategy: a gRPC session, or ctr import), write nothing, and say what answered."""
    from nodeload.progress import NullProgress
    from nodeload.session import transport_for
    from nodeload.stores.containerd import open_containerd

    transport = transport_for(node, ssh)
    assert transport is not None  # nodes with a problem are not checked
    async with (
        transport,
        open_containerd(transport, node, NullProgress(), socket=socket, timeout=timeout) as store,
    ):
        about = store.about
        return {"reach": about.reach, "socket": about.socket, "containerd_version": about.version or None}


# -- text ---------------------------------------------------------------------------------------


def _print_settings(settings: list[Setting], config_file: str | None) -> None:
    """The settings that are not built-in defaults, each with where it came from."""
    from nodeload.text import printable

    print(f"config file  {config_file or 'none'}")
    for each in settings:
        if each.origin.source != "default":
            value = " ".join(each.value) if isinstance(each.value, list) else each.value
            value = str(value).lower() if isinstance(value, bool) else value
            print(printable(f"  --{each.name} {value}  ({each.origin})"))
    print("  (every other setting: its default)")


def _print(views: list[NodeView], reader: str | None) -> None:
    from nodeload.text import printable

    if reader is not None:
        print(f"inventory read by {reader}")
    for view in views:
        for line in _lines(view):
            print(printable(line))


def _lines(view: NodeView) -> list[str]:
    fields = view.fields
    status = "ok" if view.error is None else "FAILED"
    lines = [f"{view.node.name}  [{fields['reach']}] {status}"]
    ssh = fields.get("ssh")
    if ssh:
        lines += _ssh_lines(ssh)
    if fields.get("container"):
        lines.append(f"  container    {fields['container']} (docker exec)")
    kube = fields.get("kubernetes")
    if kube:
        why = f" ({kube['instead_of_ssh']})" if kube.get("instead_of_ssh") else ""
        lines.append(
            f"  agent        pod of nodeload-agent in {kube['agent_namespace']}, through {kube['server']} "
            f"(context {kube['context']}, user {kube['user']}){why}"
        )
    lines.append(f"  containerd   {', '.join(fields['containerd_sockets'])}  namespace {fields['namespace']}")
    if fields.get("platform"):
        lines.append(f"  platform     {fields['platform']}")
    if fields.get("sudo"):
        lines.append("  sudo -n      allowed")
    check = fields.get("check")
    if check and check.get("reachable"):
        found = f"containerd {check['containerd_version']} at {check['socket']}"
        lines.append(f"  reached      {check['reach']}: {found}")
    if view.error:
        lines.append(f"  error        {view.error}")
    return lines


def _ssh_lines(ssh: dict[str, Any]) -> list[str]:
    lines = []
    for hop in ssh["jumps"]:
        lines.append(f"  jump         {_hop_text(hop)}")
        lines += _hop_details(hop, "               ")
    lines.append(f"  ssh          {_hop_text(ssh)}")
    lines += _hop_details(ssh, "               ")
    if ssh.get("known_hosts"):
        lines.append(f"  known_hosts  {ssh['known_hosts']} (--known-hosts)")
    if not ssh.get("host_keys_checked", True):
        lines.append("  host keys    NOT checked (--insecure-skip-host-key-check)")
    lines.append(f"  resolved by  {'ssh -G (OpenSSH)' if ssh['resolver'] == 'openssh' else ssh['resolver']}")
    lines += [f"  note         {note}" for note in ssh["notes"]]
    return lines


def _hop_text(hop: dict[str, Any]) -> str:
    named = f" ({hop['host']})" if hop["host"] != hop["hostname"] else ""
    return f"{hop['user']}@{hop['hostname']}:{hop['port']}{named}"


def _hop_details(hop: dict[str, Any], indent: str) -> list[str]:
    found = hop["identity_files_found"]
    keys = ", ".join(found) if found else "none of " + ", ".join(hop["identity_files"])
    agent = {None: "$SSH_AUTH_SOCK", "none": "none"}.get(hop["identity_agent"], hop["identity_agent"])
    only = " (IdentitiesOnly)" if hop["identities_only"] else ""
    lines = [f"{indent}keys {keys}; agent {agent}{only}"]
    if hop["proxy_command"]:
        lines.append(f"{indent}ProxyCommand {hop['proxy_command']}")
    files = [f for f in (*hop["user_known_hosts"], *hop["global_known_hosts"]) if f != "none"]
    alias = f" as {hop['host_key_alias']}" if hop["host_key_alias"] else ""
    checking = hop["strict_host_key_checking"]
    lines.append(
        f"{indent}host key{alias} in {', '.join(files) or 'no file'} (StrictHostKeyChecking {checking})"
    )
    return lines
