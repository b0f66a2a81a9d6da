"""Registries for tests: a real one (distribution, Debian's ``docker-registry``) started as a
plain process, and the auth files Docker and skopeo write.

Typical use::

    with start_registry(tmp_path / "reg", users={"bob": "secret"}) as registry:
        registry.copy_in(f"oci:{layout}:v1", "team/app:v1", all_platforms=True)
        open_source(f"docker://{registry.host}/team/app:v1")
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.nodes import free_port

REGISTRY_BINARY = "docker-registry"
# What the user's environment may point credential lookups at: tests start from none of it.
AUTH_VARIABLES = ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}/data
http:
  addr: 127.0.0.1:{port}
"""
HTPASSWD = """\
auth:
  htpasswd:
    realm: nodeload-test
    path: {root}/htpasswd
"""


# -- auth files --------------------------------------------------------------------------


def isolate_auth(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """An empty HOME and none of the variables that point at auth files; returns HOME."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def auth_entry(user: str, password: str) -> dict[str, str]:
    """An ``auths`` entry as ``docker login`` writes it."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_auth_file(path: Path, auths: Mapping[str, Any] = (), **top: Any) -> Path:
    """A Docker ``config.json`` / containers ``auth.json``: ``{"auths": ..., **top}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": dict(auths), **top}))
    return path


# -- distribution ------------------------------------------------------------------------


def need_registry() -> None:
    """Skip (a failure under CI=true) when the registry, skopeo or htpasswd is missing."""
    missing = [b for b in (REGISTRY_BINARY, "skopeo", "htpasswd") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install docker-registry skopeo apache2-utils)")


@dataclass
class Registry:
    """A distribution registry on 127.0.0.1, plain HTTP, optionally with htpasswd users."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    users: Mapping[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as in image names."""
        return f"127.0.0.1:{self.port}"

    def ref(self, name: str) -> str:
        """``docker://127.0.0.1:PORT/NAME``."""
        return f"docker://{self.host}/{name}"

    def copy_in(
        self, source: str, name: str, *, all_platforms: bool = False, docker_format: bool = False
    ) -> None:
        """``skopeo copy SOURCE`` into ``NAME`` (``repo:tag``).

        Digests are kept, unless ``docker_format`` converts the manifests (and an index) to
        Docker's media types, as ``docker push`` writes them; configs and layers stay.
        """
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false"]
        argv += ["--format=v2s2"] if docker_format else ["--preserve-digests"]
        if self.users:
            user, password = next(iter(self.users.items()))
            argv.append(f"--dest-creds={user}:{password}")
        if all_platforms:
            argv.append("--all")
        done = subprocess.run([*argv, source, self.ref(name)], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"skopeo copy {source} {self.ref(name)} failed: {done.stderr.strip()}")

    def stop(self) -> None:
        """Stop the registry and delete its storage."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(root: Path, users: Mapping[str, str] | None = None) -> Registry:
    """Start a registry with storage under ``root``; with ``users``, htpasswd (bcrypt) auth."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = CONFIG.format(root=root, port=port)
    if users:
        lines = [_htpasswd(user, password) for user, password in users.items()]
        (root / "htpasswd").write_text("".join(lines))
        config += HTPASSWD.format(root=root)
    (root / "config.yml").write_text(config)
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([REGISTRY_BINARY, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    registry = Registry(root, port, process, dict(users or {}))
    try:
        _wait_until_up(registry)
    except BaseException:
        registry.stop()
        raise
    return registry


def _htpasswd(user: str, password: str) -> str:
    done = subprocess.run(["htpasswd", "-nbB", user, password], check=True, capture_output=True, text=True)
    return done.stdout.strip() + "\n"


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_until_up(registry: Registry, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            raise RuntimeError(f"the registry exited: {(registry.root / 'registry.log').read_text()[-2000:]}")
        try:
            _DIRECT.open(f"http://{registry.host}/v2/", timeout=2).close()
            return
        except urllib.error.HTTPError:  # 401: up, and asking for a login
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the registry did not come up within {timeout}s")
