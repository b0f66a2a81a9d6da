"""Build the ``nodeload-node`` image: a stand-in for a Kubernetes node (sshd + containerd).

The image's tag is a hash of the files baked into it, so a second build is a lookup.
Where a registry is reachable the base is ``debian:bookworm-slim``; where none is (CI,
air-gapped machines) it is a debootstrap rootfs, cached as a tarball and ``docker import``-ed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Literal

import docker
import docker.errors

from nodeload import userdirs

log = logging.getLogger(__name__)

NODE_IMAGE_REPO = "nodeload-node"
BASE_IMAGE_REPO = "nodeload-node-base"
REGISTRY_BASE = "debian:bookworm-slim"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Same list as the Dockerfile's apt-get line; minbase already brings coreutils.
PACKAGES = (
    "containerd",
    "runc",
    "openssh-server",
    "socat",
    "netcat-openbsd",
    "sudo",
    "ca-certificates",
    "iproute2",
)
CONTEXT_FILES = ("Dockerfile", "entrypoint.sh", "containerd-config.toml")
PULL_TIMEOUT_S = 20

BaseSource = Literal["auto", "registry", "debootstrap"]


class SandboxError(RuntimeError):
    """The sandbox (node image, node containers, test images) could not be set up."""


def docker_client() -> docker.DockerClient:
    """Return a Docker client that negotiates the API version with the engine.

    The SDK's default API version is newer than Docker 20.10 (API 1.41) accepts.
    """
    return docker.from_env(version="auto")


def cache_dir() -> Path:
    """Return nodeload's cache directory (``${XDG_CACHE_HOME:-~/.cache}/nodeload``, or your own
    ``~/.cache/nodeload`` when another user could redirect that one: :func:`nodeload.userdirs.cache_dir`).

    Raises:
        SandboxError: No cache directory is safe to use.
    """
    try:
        return userdirs.cache_dir()
    except PermissionError as exc:
        raise SandboxError(str(exc)) from exc


def node_image_tag() -> str:
    """Return ``nodeload-node:<hash>`` for the current Dockerfile, entrypoint and config."""
    digest = hashlib.sha256()
    for name in CONTEXT_FILES:
        digest.update(name.encode() + b"\0" + _context_file(name) + b"\0")
    digest.update(",".join(PACKAGES).encode())
    return f"{NODE_IMAGE_REPO}:{digest.hexdigest()[:12]}"


def ensure_node_image(client: docker.DockerClient | None = None, *, base: BaseSource = "auto") -> str:
    """Build the node image unless an image with the same content hash exists.

    Args:
        client: Docker client; a new one from the environment when omitted.
        base: ``"registry"`` to build on ``debian:bookworm-slim``, ``"debootstrap"`` to build
            on a local rootfs, ``"auto"`` (default) to use the registry when reachable.
            The ``NODELOAD_NODE_BASE`` environment variable overrides ``"auto"``.

    Returns:
        The image tag, e.g. ``nodeload-node:0123456789ab``.

    Raises:
        SandboxError: The base image or the node image could not be built.
    """
    client = client or docker_client()
    tag = node_image_tag()
    if _image_exists(client, tag):
        return tag
    # Parallel test workers would otherwise debootstrap and build the same thing at once.
    with _cache_lock():
        if not _image_exists(client, tag):
            _build_node_image(client, tag, _base_image(client, base))
    return tag


DOCKERD_IMAGE_REPO = "nodeload-node-dockerd"
_DOCKERD_DOCKERFILE = """ARG BASE
FROM ${BASE}
# A node that runs its own Docker Engine (the --store docker tests): Debian's docker.io.
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io \\
    && rm -rf /var/lib/apt/lists/*
"""


def ensure_dockerd_node_image(client: docker.DockerClient | None = None, *, base: BaseSource = "auto") -> str:
    """The node image plus Debian's Docker Engine, built on first use (needs Debian's archive).

    Raises:
        SandboxError: The image could not be built.
    """
    client = client or docker_client()
    node = ensure_node_image(client, base=base)
    tag = f"{DOCKERD_IMAGE_REPO}:{node.rpartition(':')[2]}"
    if _image_exists(client, tag):
        return tag
    with _cache_lock():
        if not _image_exists(client, tag):
            log.info("building %s on %s", tag, node)
            with tempfile.TemporaryDirectory(prefix="nodeload-dockerd-") as ctx:
                (Path(ctx) / "Dockerfile").write_text(_DOCKERD_DOCKERFILE)
                try:
                    client.images.build(path=ctx, tag=tag, buildargs={"BASE": node}, rm=True, forcerm=True)
                except docker.errors.BuildError as exc:
                    tail = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)[-2000:]
                    raise SandboxError(f"building {tag}: {exc.msg}\n{tail}") from exc
    return tag


def _build_node_image(client: docker.DockerClient, tag: str, base_image: str) -> None:
    log.info("building %s on %s", tag, base_image)
    with tempfile.TemporaryDirectory(prefix="nodeload-node-") as ctx:
        for name in CONTEXT_FILES:
            (Path(ctx) / name).write_bytes(_context_file(name))
        try:
            client.images.build(path=ctx, tag=tag, buildargs={"BASE": base_image}, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)[-2000:]
            raise SandboxError(f"building {tag}: {exc.msg}\n{tail}") from exc


def _base_image(client: docker.DockerClient, base: BaseSource) -> str:
    if base == "auto":
        base = _env_base()
    if base == "auto":
        base = "registry" if _registry_base_available(client) else "debootstrap"
    if base == "debootstrap":
        return _debootstrap_base(client)
    if not _registry_base_available(client):
        raise SandboxError(f"cannot pull {REGISTRY_BASE}; try base='debootstrap'")
    return REGISTRY_BASE


def _env_base() -> BaseSource:
    value = os.environ.get("NODELOAD_NODE_BASE", "auto")
    if value not in ("auto", "registry", "debootstrap"):
        raise SandboxError(f"NODELOAD_NODE_BASE={value!r}: expected auto, registry or debootstrap")
    return value  # type: ignore[return-value]


def _registry_base_available(client: docker.DockerClient) -> bool:
    if _image_exists(client, REGISTRY_BASE):
        return True
    # A short-lived client: the pull should fail fast when no registry is reachable.
    try:
        puller = docker.from_env(version="auto", timeout=PULL_TIMEOUT_S)
        repo, _, tag = REGISTRY_BASE.partition(":")
        puller.images.pull(repo, tag=tag)
    except Exception as exc:  # unreachable registry: DNS, TLS, timeout, API error...
        log.info("no registry base (%s); using debootstrap", str(exc).splitlines()[0])
        return False
    return True


def _debootstrap_base(client: docker.DockerClient) -> str:
    key = hashlib.sha256(f"{SUITE}:{','.join(PACKAGES)}".encode()).hexdigest()[:12]
    tag = f"{BASE_IMAGE_REPO}:{key}"
    if _image_exists(client, tag):
        return tag
    tarball = cache_dir() / f"rootfs-{SUITE}-{key}.tar"
    if not tarball.exists():
        _debootstrap_tarball(tarball)
    log.info("importing %s as %s", tarball, tag)
    client.api.import_image_from_file(str(tarball), repository=BASE_IMAGE_REPO, tag=key)
    if not _image_exists(client, tag):
        raise SandboxError(f"docker import of {tarball} did not produce {tag}")
    return tag


def _debootstrap_tarball(tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed (scripts/ensure-docker.sh installs it)")
    mirror = os.environ.get("NODELOAD_DEBIAN_MIRROR", DEFAULT_MIRROR)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nodeload-rootfs-", dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log.info("debootstrapping %s into %s (about a minute)", SUITE, rootfs)
        _run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        )
        # Downloaded .debs and package lists are a third of the rootfs and never used again.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = Path(tmp) / "rootfs.tar"
        _run("tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), ".")
        partial.replace(tarball)  # atomic: a killed run never leaves half a tarball


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _context_file(name: str) -> bytes:
    return (resources.files(__package__ or "nodeload.sandbox") / name).read_bytes()


@contextmanager
def _cache_lock() -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "node-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
