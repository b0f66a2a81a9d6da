"""Host variables -> NodeSpec: the variables nodeload reads, checked, as Ansible uses them."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nodeload.addresses import node_path_problem, refused, ssh_name_problem
from nodeload.errors import NodeSourceError, UsageError
from nodeload.nodes.listed import parse_node
from nodeload.nodes.spec import NodeSpec, Reach
from nodeload.platforms import Platform

if TYPE_CHECKING:  # building imports model, which imports this module
    from nodeload.nodes.inventory.building import Vars

# The variables nodeload reads. Ansible's ssh plugin takes the later name of each pair
# when both are set; so does _HostVars.lookup.
_ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_CONTAINER_VARS = ("ansible_host", "ansible_docker_host")
# In the order ssh receives them; ssh keeps the first ProxyJump it is given.
_SSH_ARGS_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_USED_VARS = frozenset(
    (
        *_ADDRESS_VARS,
        *_PORT_VARS,
        *_USER_VARS,
        *_KEY_VARS,
        *_CONTAINER_VARS,
        *_SSH_ARGS_VARS,
        "ansible_connection",
        "ansible_become",
        "nodeload_containerd_socket",
        "nodeload_namespace",
        "nodeload_platform",
    )
)

_CONNECTIONS: dict[str, Reach] = {
    "smart": "ssh",
    "ssh": "ssh",
    "ansible.builtin.ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "local": "local",
    "ansible.builtin.local": "local",
    "docker": "docker",
    "community.docker.docker": "docker",
    "community.docker.docker_api": "docker",
}
# Ansible's boolean(): these spellings, any case.
_TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "off", "0", "n", "f", ""})
# ssh(1) options that take a value, so that a scan for -J skips their values like getopt.
_SSH_VALUE_FLAGS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_PROXY_JUMP = re.compile(r"\s*proxyjump(?:\s*=\s*|\s+)(\S+)\s*", re.IGNORECASE)
_PROXY_COMMAND = re.compile(r"proxycommand\s*[=\s]", re.IGNORECASE)


def _pick_used(layers: Iterable[Vars]) -> Vars:
    """The variables nodeload reads from ``layers``, a later layer overriding an earlier."""
    return {key: layer[key] for layer in layers for key in _USED_VARS if key in layer}


# A value's type in words, for this module's and the YAML walker's messages.
def _kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


@dataclass(frozen=True)
class _HostVars:
    """One host's resolved variables, read with type checks that name the host."""

    source: Path
    host: str
    values: Vars

    def error(self, message: str) -> NodeSourceError:
        return NodeSourceError(f"{self.source}: host {self.host!r}: {message}")

    def lookup(self, *names: str) -> tuple[str, object] | None:
        """The last of ``names`` that is set (null counts as unset), with its value."""
        found = None
        for name in names:
            if self.values.get(name) is not None:
                found = (name, self.values[name])
        return found

    def text(self, *names: str) -> str | None:
        found = self.lookup(*names)
        if found is None:
            return None
        name, value = found
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"{name} must be a string, not {_kind(value)}")
        text = str(value).strip()
        if "{{" in text or "{%" in text:
            raise self.error(f"{name} is a Jinja template ({text!r}); nodeload does not evaluate templates")
        return text or None

    def port(self) -> int | None:
        found = self.lookup(*_PORT_VARS)
        if found is None:
            return None
        name, value = found
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,5}\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(f"invalid {name} {value!r} (expected a port number, 1-65535)")
        return value

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise self.error(f"{name} {value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")

    def reach(self) -> Reach:
        connection = self.text("ansible_connection") or "smart"
        reach = _CONNECTIONS.get(connection)
        if reach is None:
            supported = "ssh, paramiko, smart, local, docker"
            raise self.error(f"ansible_connection {connection!r} is not one nodeload can use ({supported})")
        return reach

    def identity(self, base: Path) -> Path | None:
        text = self.text(*_KEY_VARS)
        if text is None:
            return None
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~user/... for an unknown user, or no home directory
            raise self.error(f"cannot expand the private key path {text!r}") from None
        # As Ansible: it passes the path to ssh, which opens it from the current directory.
        return path if path.is_absolute() else base / path

    def jump(self) -> str | None:
        for name in _SSH_ARGS_VARS:
            text = self.text(name)
            if text is None:
                continue
            try:
                args = shlex.split(text)
            except ValueError as exc:
                raise self.error(f"cannot split {name} ({exc})") from None
            jump = _jump_in(args)
            if jump is not None:
                return "none" if jump.lower() == "none" else jump  # "none": not the config's either
        return None

    def proxy_command(self) -> str | None:
        """The ssh args' variable that sets a ProxyCommand, if one does."""
        for name in _SSH_ARGS_VARS:
            text = self.text(name)
            if text is not None and _PROXY_COMMAND.search(text):
                return name
        return None

    def sockets(self) -> tuple[str, ...]:
        value = self.values.get("nodeload_containerd_socket")
        if isinstance(value, list | tuple) and all(isinstance(item, str) and item for item in value):
            return tuple(value)
        text = self.text("nodeload_containerd_socket")
        return () if text is None else (text,)

    def platform(self) -> Platform | None:
        text = self.text("nodeload_platform")
        if text is None:
            return None
        try:
            return Platform.parse(text)
        except UsageError as exc:
            raise self.error(f"nodeload_platform: {exc}") from None


def _jump_in(args: list[str]) -> str | None:
    """The first jump host in ssh arguments: ``-J HOST``, ``-JHOST``, ``-o ProxyJump=HOST``."""
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        for index, flag in enumerate(arg[1:], start=2):  # getopt: flags may be bundled, -qJ h
            if flag in _SSH_VALUE_FLAGS:
                value = arg[index:]
                if not value and position < len(args):
                    value = args[position]
                    position += 1
                if flag == "J":
                    return value or None
                option = _PROXY_JUMP.fullmatch(value) if flag == "o" else None
                if option:
                    return option.group(1)
                break
    return None


def _node_spec(values: _HostVars, base: Path) -> NodeSpec:
    reach = values.reach()
    spec = NodeSpec(
        name=values.host,
        sockets=values.sockets(),
        namespace=values.text("nodeload_namespace"),
        platform=values.platform(),
        become=values.flag("ansible_become"),
        reach=reach,
    )
    if reach == "docker":
        spec = replace(spec, container=values.text(*_CONTAINER_VARS) or values.host)
    elif reach == "ssh":
        spec = replace(
            spec,
            address=values.text(*_ADDRESS_VARS) or values.host,
            user=values.text(*_USER_VARS),
            port=values.port(),
            identity=values.identity(base),
            jump=values.jump(),
        )
    # Data of the inventory's maintainer: what cannot be used fails this host alone.
    problem = _sockets_problem(spec) or (_destination_problem(values, spec) if reach == "ssh" else None)
    if problem:
        return replace(spec, address=None, problem=f"{values.source}: host {values.host!r}: {problem}")
    return spec


def _sockets_problem(spec: NodeSpec) -> str | None:
    """Why a ``nodeload_containerd_socket`` of the host cannot be used, or None."""
    for socket in spec.sockets:
        why = node_path_problem(socket)
        if why:
            return refused("nodeload_containerd_socket", socket, why, use="a socket path")
    return None


def _destination_problem(values: _HostVars, spec: NodeSpec) -> str | None:
    """Why the host's SSH destination cannot be used (the inventory's maintainer wrote it, and
    ssh may put it into a command), or None."""
    address = values.lookup(*_ADDRESS_VARS)
    user = values.lookup(*_USER_VARS)
    fields = [
        (address[0] if address else "the host name", spec.address),
        (user[0] if user else "", spec.user),
    ]
    for field, value in fields:
        why = None if value is None else ssh_name_problem(value)
        if value is not None and why:
            return refused(field, value, why)
    command = values.proxy_command()
    if command:
        return (
            f"{command} sets a ProxyCommand, which nodeload does not run from an inventory (it is a "
            "command on this machine): use ProxyJump there, or the ProxyCommand in your ssh config"
        )
    for hop in (spec.jump or "").split(","):
        if hop.strip() and hop.strip().lower() != "none":
            try:
                parse_node(hop.strip().removeprefix("ssh://"))
            except UsageError as err:
                return f"the ProxyJump of its ssh args: {err}"
    return None
