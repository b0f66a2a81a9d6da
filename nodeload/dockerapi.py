"""The local Docker engine's API client, found the way the docker CLI finds it.

``DOCKER_HOST`` first; otherwise the Docker context (``DOCKER_CONTEXT``, else the
``currentContext`` of ``~/.docker/config.json``), whose endpoint is read from the CLI's
context store; otherwise the default socket.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import docker
import docker.errors

from nodeload.errors import SourceError

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
