"""Running ``nodeload serve``: open the nodes, listen on loopback, hand credentials to a command.

The endpoint lives as long as the wrapped command (or until Ctrl-C without one). The
command gets ``NODELOAD_REGISTRY`` (host:port), and ``DOCKER_CONFIG`` and
``REGISTRY_AUTH_FILE`` pointing at per-run credential files, so docker, skopeo, buildah and
crane authenticate with no login step. Nothing listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeload import scratch
from nodeload.containerd.client import DEFAULT_TIMEOUT
from nodeload.containerd.connect import connect_containerd
from nodeload.dockerapi import docker_config_dir
from nodeload.errors import NodeloadError, UsageError
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import NullProgress, ProgressSink
from nodeload.registry.limits import Limits
from nodeload.registry.protocol import Credentials, build_app, listen, loopback
from nodeload.registry.store import NodesStore, ServedNode
from nodeload.session import Session, transport_for
from nodeload.stores.base import CRI_NAMESPACE
from nodeload.stores.containerd import ContainerdStore
from nodeload.transports.bridge import NoRelay
from nodeload.transports.ssh_connect import SSHOptions

Notify = Callable[[str], None]


@dataclass(frozen=True)
class ServeOptions:
    """How to serve: the namespace images land in, where to listen, how nodes are reached."""

    namespace: str = CRI_NAMESPACE
    listen: str = "127.0.0.1:0"
    fallback_port: bool = False  # when the listen port is taken, use a free one instead of failing
    socket: str | None = None  # use only this containerd socket on every node
    timeout: float = DEFAULT_TIMEOUT
    ssh: SSHOptions = field(default_factory=SSHOptions)
    limits: Limits = field(default_factory=Limits)  # what clients may ask of the endpoint


@dataclass
class ServeOutcome:
    """What a run of ``nodeload serve`` did."""

    address: str
    command_status: int | None
    sessions: list[ServedNode]
    unreachable: dict[str, str]  # node -> why it could not be opened

    @property
    def nodes_ok(self) -> bool:
        """Every node was reached and took everything pushed to it."""
        return not self.unreachable and not any(s.errors for s in self.sessions)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        nodes = [
            {
                "node": s.name,
                "status": "failed" if s.errors else "ok",
                "bytes_received": s.bytes_received,
                "images": [r.to_json() for r in s.results],
                "stored": [m.to_json() for m in s.stored],
                "errors": s.errors,
            }
            for s in self.sessions
        ]
        nodes += [{"node": n, "status": "failed", "bytes_received": 0, "images": [], "stored": [],
                   "errors": [why]} for n, why in self.unreachable.items()]  # fmt: skip
        return {"registry": self.address, "command_status": self.command_status, "nodes": nodes}


@dataclass
class Endpoint:
    """A running registry over open node sessions (see :func:`open_endpoint`)."""

    address: str
    credentials: Credentials
    store: NodesStore
    unreachable: dict[str, str]

    @property
    def sessions(self) -> list[ServedNode]:
        """The nodes being served."""
        return self.store.sessions


@contextlib.asynccontextmanager
async def open_endpoint(
    nodes: Sequence[NodeSpec],
    options: ServeOptions,
    progress: ProgressSink,
    *,
    require_all: bool = False,
    name_from_source: bool = False,
    session: Session | None = None,
) -> AsyncIterator[Endpoint]:
    """Connect to the nodes and listen; everything is closed on leaving.

    Args:
        require_all: Fail unless every node can be served (for ``push``, which has another path).
        name_from_source: Image names come from inside the source: never repoint existing images.

    Raises:
        NodeloadError: when no node (with ``require_all``: some node) cannot be served.
    """
    host, port = loopback(options.listen)
    scratch.sweep_temp()  # what runs killed with -9 left (spools, logins), however nodes are reached
    async with contextlib.AsyncExitStack() as stack:
        sessions, unreachable = await _open_sessions(stack, nodes, options, progress, session)
        if not sessions or (require_all and unreachable):
            reasons = "; ".join(f"{name}: {why}" for name, why in unreachable.items())
            raise NodeloadError(f"cannot serve the nodes: {reasons}")
        store = NodesStore(
            sessions, options.namespace, progress, name_from_source=name_from_source, limits=options.limits
        )
        stack.push_async_callback(store.close)
        credentials = Credentials.generate()
        address = await listen(
            stack, build_app(store, credentials), host, port, fallback=options.fallback_port
        )
        yield Endpoint(address, credentials, store, unreachable)


async def serve_async(
    nodes: Sequence[NodeSpec],
    options: ServeOptions,
    command: Sequence[str] | None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    ready: Callable[[str, dict[str, str]], None] | None = None,
    stdout_to_stderr: bool = False,
) -> ServeOutcome:
    """Serve the nodes as a registry until ``command`` ends (or until cancelled without one).

    ``ready`` is told the address and the environment a client needs, once listening.
    ``stdout_to_stderr`` sends the command's output to stderr (stdout carries ``--json``).

    Raises:
        UsageError: a non-loopback ``listen``.
        NodeloadError: when no node can be reached at all.
    """
    say = notify or (lambda text: None)
    async with (
        open_endpoint(nodes, options, progress or NullProgress()) as endpoint,
        contextlib.AsyncExitStack() as files,
    ):
        for name, why in endpoint.unreachable.items():
            say(f"{name}: FAILED: {why}")
        env = _client_environment(files, endpoint.address, endpoint.credentials)
        if ready is not None:
            ready(endpoint.address, env)
        status = await _run(command, env, stdout_to_stderr) if command else await _forever()
        return ServeOutcome(endpoint.address, status, endpoint.sessions, endpoint.unreachable)
    raise AssertionError("unreachable")  # pragma: no cover (the with block returns or raises)


async def _open_sessions(
    stack: contextlib.AsyncExitStack,
    nodes: Sequence[NodeSpec],
    options: ServeOptions,
    progress: ProgressSink,
    session: Session | None = None,
) -> tuple[list[ServedNode], dict[str, str]]:
    """Connect to every node at once; those that fail are reported, the others served."""

    leases: set[str] = set()  # the run's own, without a session

    async def open_one(spec: NodeSpec) -> ServedNode:
        if spec.problem:
            raise NodeloadError(spec.problem)
        transport = transport_for(spec, options.ssh, session)
        assert transport is not None
        if session is not None:
            stack.callback(session.give_back, [transport])
        await stack.enter_async_context(transport)
        held = session.leases if session is not None else leases
        opener = connect_containerd(
            transport, spec, progress, socket=options.socket, timeout=options.timeout, held=held
        )
        try:
            connected = await stack.enter_async_context(opener)
        except NoRelay as err:
            raise NodeloadError(f"nodeload serve needs a stream to containerd, and {err}") from err
        target = ContainerdStore(connected, spec.name, progress)
        writer = target.writer(spec.namespace or options.namespace)
        await stack.enter_async_context(writer.client.leased())  # keeps uploads until images name them
        return ServedNode(spec.name, target, writer.client, transport)

    outcomes = await asyncio.gather(*(open_one(spec) for spec in nodes), return_exceptions=True)
    sessions: list[ServedNode] = []
    unreachable: dict[str, str] = {}
    for spec, outcome in zip(nodes, outcomes, strict=True):
        if isinstance(outcome, ServedNode):
            sessions.append(outcome)
        elif isinstance(outcome, Exception):
            unreachable[spec.name] = str(outcome) if isinstance(outcome, NodeloadError) else repr(outcome)
        else:
            raise outcome
    return sessions, unreachable


def _client_environment(
    stack: contextlib.ExitStack | contextlib.AsyncExitStack, address: str, credentials: Credentials
) -> dict[str, str]:
    """Per-run credential files for docker and for skopeo/buildah/podman; the variables naming them."""
    directory = Path(scratch.mkdtemp("nodeload-serve-auth-"))
    stack.callback(shutil.rmtree, directory, True)
    docker_dir = directory / "docker"
    docker_dir.mkdir(mode=0o700)
    _docker_config(docker_dir, address, credentials)
    auth_file = directory / "auth.json"
    _write_private(auth_file, {"auths": {address: {"auth": credentials.basic}}})
    return {
        "NODELOAD_REGISTRY": address,
        "DOCKER_CONFIG": str(docker_dir),
        "REGISTRY_AUTH_FILE": str(auth_file),
    }


def _docker_config(directory: Path, address: str, credentials: Credentials) -> None:
    """The user's Docker config (contexts, plugins, other logins) plus this endpoint's login.

    A credential store would be asked for this endpoint instead of ``auths``: it is dropped
    for the wrapped command (other registries' logins stored there are then not available).
    """
    user_dir = docker_config_dir()
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((user_dir / "config.json").read_text())
        config = loaded if isinstance(loaded, dict) else {}
    config.pop("credsStore", None)
    if isinstance(config.get("credHelpers"), dict):
        config["credHelpers"].pop(address, None)
    auths = config.get("auths")
    config["auths"] = {**(auths if isinstance(auths, dict) else {}), address: {"auth": credentials.basic}}
    _write_private(directory / "config.json", config)
    if user_dir.is_dir():  # contexts, cli-plugins (buildx), buildx state...
        for entry in user_dir.iterdir():
            if entry.name != "config.json":
                (directory / entry.name).symlink_to(entry)


def _write_private(path: Path, document: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(document, file)


async def _run(command: Sequence[str], env: dict[str, str], stdout_to_stderr: bool) -> int:
    """Run the wrapped command with the endpoint's environment; its exit status."""
    stdout = sys.stderr.fileno() if stdout_to_stderr else None
    try:
        process = await asyncio.create_subprocess_exec(*command, env={**os.environ, **env}, stdout=stdout)
    except OSError as err:
        raise UsageError(f"cannot run {command[0]!r}: {err.strerror or err}") from err
    try:
        return await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(process.wait(), 10)
        raise


async def _forever() -> int | None:
    """Serve until cancelled (Ctrl-C or SIGTERM, turned into KeyboardInterrupt by the CLI)."""
    await asyncio.Event().wait()
    return None
