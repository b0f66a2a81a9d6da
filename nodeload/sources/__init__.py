"""Image sources, addressed with skopeo's transport names (called *schemes* in this code, where
"transport" means how a node is reached).

``docker-daemon:REF``, ``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``,
``docker-archive:FILE[:REF]``, ``docker://REF`` (a registry), ``containerd:REF`` (a containerd
on this machine, as nerdctl and BuildKit leave images); a bare ``REF`` means the local Docker
daemon, and so does ``docker:latest`` (an image named docker, not a registry).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nodeload.early import LayerListener
from nodeload.errors import UsageError
from nodeload.reference import parse_reference
from nodeload.sources.base import Source, SourceOptions
from nodeload.sources.layer_cache import LayerCache, default_cache_dir

__all__ = [
    "SCHEMES",
    "LayerCache",
    "Source",
    "SourceOptions",
    "SourceSpec",
    "default_cache_dir",
    "open_source",
    "parse_source",
]

SCHEMES = ("docker-daemon", "oci", "oci-archive", "docker-archive", "docker", "containerd")
_LOCAL_SCHEMES = SCHEMES[:4]
# The registry scheme is "docker://": "docker:" alone is an image name (docker:latest).
_REGISTRY_PREFIX = "docker://"
# skopeo transports nodeload cannot read.
_UNSUPPORTED = ("dir:", "containers-storage:", "ostree:", "sif:", "tarball:")
_IMAGE_ID = r"(sha256:)?[0-9a-f]{12,64}"
_FORMS = (
    "docker-daemon:REF, oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker://REF, "
    "containerd:REF or REF"
)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source argument."""

    scheme: str  # one of SCHEMES
    path: Path | None  # the directory or file of path schemes
    ref: str | None  # the image within: a name, tag, image ID, or "@N"; for named schemes, the name


def parse_source(text: str) -> SourceSpec:
    """Split ``TRANSPORT:REST`` the way skopeo does; a bare REF is the Docker daemon.

    ``docker://REF`` is an image of a registry; ``docker:REF`` without the slashes is
    not a scheme but an image named docker (``docker:latest``), as everywhere else.

    For path schemes, ``PATH:REF`` is split at the colon after the longest
    prefix that exists on disk (so paths and refs may both contain colons),
    else at the first colon, as skopeo does.

    Raises:
        UsageError: for an unknown or unsupported scheme, or a bad REF.
    """
    if text.startswith(_REGISTRY_PREFIX):
        name = text.removeprefix(_REGISTRY_PREFIX)
        _check_name(name, text)
        return SourceSpec("docker", None, name)
    scheme, colon, rest = text.partition(":")
    if colon and scheme == "containerd" and rest:
        _check_name(rest, text)
        return SourceSpec(scheme, None, rest)
    if colon and scheme in _LOCAL_SCHEMES:
        if scheme == "docker-daemon":
            return SourceSpec(scheme, None, _daemon_ref(rest, text))
        path, ref = _split_path_ref(rest)
        if not path:
            raise UsageError(f"{text!r}: {scheme}: needs a path, e.g. {scheme}:./image[:REF]")
        if ref is not None and scheme == "docker-archive" and not ref.startswith("@"):
            _check_name(ref, text)
        return SourceSpec(scheme, Path(path), ref)
    unsupported = next((t for t in _UNSUPPORTED if text.startswith(t)), None)
    if unsupported:
        raise UsageError(f"{text!r}: the {unsupported[:-1]} transport is not supported; use {_FORMS}")
    return SourceSpec("docker-daemon", None, _daemon_ref(text, text))


def _split_path_ref(rest: str) -> tuple[str, str | None]:
    if os.path.exists(rest) or ":" not in rest:
        return rest, None
    colons = [i for i, c in enumerate(rest) if c == ":"]
    at = next((i for i in reversed(colons) if os.path.exists(rest[:i])), colons[0])
    return rest[:at], rest[at + 1 :] or None


def _daemon_ref(ref: str, text: str) -> str:
    if re.fullmatch(_IMAGE_ID, ref):
        return ref
    _check_name(ref, text)
    return ref


def _check_name(ref: str, text: str) -> None:
    try:
        parse_reference(ref)
    except UsageError as exc:
        raise UsageError(f"{text!r} is not an image source ({exc}); expected {_FORMS}") from exc


def open_source(
    text: str,
    *,
    cache: LayerCache | None = None,
    options: SourceOptions | None = None,
    listener: LayerListener | None = None,
) -> Source:
    """Open the image source ``text`` names (see :func:`parse_source`).

    Close the result (or use it in a ``with`` block): archive sources hold
    files, compressed archives a temporary decompressed copy, registries connections.

    Args:
        text: e.g. ``myapp:dev``, ``oci:./out:v1``, ``docker-archive:app.tar``,
            ``docker://ghcr.io/me/app:1``.
        cache: the layer cache (default: ``${XDG_CACHE_HOME:-~/.cache}/nodeload``).
        options: how to reach a registry (default: TLS verified) or a local containerd.
        listener: hears of layers ready before the whole image is (sources that export and
            compress: the Docker engine's); the others tell nothing.

    Raises:
        UsageError: when ``text`` is not a valid source.
        ImageNotFound: when the image is not there.
        SourceError: when the source cannot be read (RegistryAuthFailed: a registry refused access).
    """
    spec = parse_source(text)
    if spec.scheme == "docker":
        from nodeload.sources.registry import open_registry  # imports requests

        assert spec.ref is not None
        return open_registry(spec.ref, tls_verify=(options or SourceOptions()).tls_verify)
    if spec.scheme == "containerd":
        from nodeload.sources.containerd_store import open_containerd_store

        assert spec.ref is not None
        opts = options or SourceOptions()
        return open_containerd_store(
            spec.ref, address=opts.containerd_address, namespace=opts.containerd_namespace
        )
    if spec.scheme == "docker-daemon":
        from nodeload.sources.docker_daemon import open_docker_daemon  # imports the docker SDK

        assert spec.ref is not None
        return open_docker_daemon(spec.ref, cache=cache, listener=listener)
    assert spec.path is not None
    if spec.scheme in ("oci", "oci-archive"):
        from nodeload.sources.oci_layout import open_oci_archive, open_oci_layout

        if spec.scheme == "oci":
            return open_oci_layout(spec.path, spec.ref)
        return open_oci_archive(spec.path, spec.ref, cache=cache)
    from nodeload.sources.docker_archive import open_docker_archive  # each source loads what it needs

    return open_docker_archive(spec.path, spec.ref, cache=cache)
