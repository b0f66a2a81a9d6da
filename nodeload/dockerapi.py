"""The local Docker engine's API client, found the way the docker CLI finds it.

``DOCKER_HOST`` first; otherwise the Docker context (``DOCKER_CONTEXT``, else the
``currentContext`` of ``~/.docker/config.json``), whose endpoint is read from the CLI's
context store; otherwise the default socket.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodeload.errors import SourceError

if TYPE_CHECKING:
    import docker  # slow to import (requests, urllib3): only what talks to the engine pays for it

DEFAULT_HOST = "unix:///var/run/docker.sock"

_UNREACHABLE = (
    "Docker is not reachable ({0}). Start the Docker daemon, or point DOCKER_HOST at it "
    "(e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock or DOCKER_HOST=ssh://user@host)"
)


def docker_config_dir() -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def context_host() -> str | None:
    """The engine address of the current Docker context, or None for the default one."""
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((docker_config_dir() / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            name = None
    if not name or name == "default":
        return None
    meta = docker_config_dir() / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        host = json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(host) if host else None


def engine_client() -> docker.DockerClient:
    """A client of the engine the docker CLI would talk to, with the API version negotiated.

    Raises:
        SourceError: when no engine answers.
    """
    import docker
    import docker.errors

    try:
        host = None if os.environ.get("DOCKER_HOST") else context_host()
        if host:
            return docker.DockerClient(base_url=host, version="auto")
        # The SDK's default API version is too new for old engines: negotiate.
        return docker.from_env(version="auto")
    except docker.errors.DockerException as exc:
        raise SourceError(_UNREACHABLE.format(exc)) from exc


def unreachable(exc: BaseException) -> str:
    """The message for an engine that stopped answering."""
    return _UNREACHABLE.format(exc)


def engine_address() -> str:
    """The address of the engine the docker CLI would talk to: ``DOCKER_HOST``, the context's, the default."""
    return os.environ.get("DOCKER_HOST") or context_host() or DEFAULT_HOST


def image_names(timeout: float = 1.0) -> list[str]:
    """The engine's image names (``repo:tag``), sorted: for a shell completion, so quick and quiet.

    An engine on a unix socket is asked in one request, without the SDK; any other through the
    SDK. Empty when no engine answers within ``timeout`` seconds (or answers nonsense).
    """
    address = engine_address()
    try:
        if address.startswith("unix://"):
            listed = _unix_get(address.removeprefix("unix://"), "/images/json", timeout)
        else:
            listed = engine_client().api.images()
        tags = [image.get("RepoTags") for image in listed]
        names = {tag for each in tags if isinstance(each, list) for tag in each if isinstance(tag, str)}
    except Exception:  # no engine, no permission, a timeout, a malformed answer: no names
        return []
    return sorted(names - {"<none>:<none>"})


def _unix_get(path: str, url: str, timeout: float) -> list[dict[str, Any]]:
    connection = _UnixConnection(path, timeout)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        document = json.loads(response.read(64 * 1024 * 1024))
    finally:
        connection.close()
    if not isinstance(document, list):
        raise ValueError("not a list of images")
    return [item for item in document if isinstance(item, dict)]


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)
