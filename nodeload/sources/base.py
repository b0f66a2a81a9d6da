"""What every source object is besides an ImageSource: something to close; and how to open one."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from nodeload.errors import UsageError
from nodeload.image import ImageSource
from nodeload.reference import normalize


class Source(ImageSource, Protocol):
    """An :class:`ImageSource` that holds resources (files, temp files) until closed.

    Use it as a context manager: ``with open_source(text) as source: ...``.
    """

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# How a Docker-engine image leaves the engine: ``docker save``, the engine's own ``docker push``,
# or whichever sends less.
Export = Literal["auto", "save", "push"]


@dataclass(frozen=True)
class SourceOptions:
    """How images are read: a registry (``docker://``), a local containerd (``containerd:``), the
    Docker engine.

    Attributes:
        tls_verify: False accepts any certificate and plain HTTP from a registry, like
            skopeo's ``--src-tls-verify=false``. Registries on loopback (``localhost``,
            ``127.0.0.0/8``, ``::1``) may answer over plain HTTP even when it is True.
        containerd_address: The socket of a ``containerd:`` source (default:
            ``$CONTAINERD_ADDRESS``, else ``/run/containerd/containerd.sock``).
        containerd_namespace: Its namespace (default: ``$CONTAINERD_NAMESPACE``, else ``default``).
        export: How a Docker-engine image leaves the engine: ``save`` (``docker save``, nodeload
            compresses and caches the layers), ``push`` (the engine's own ``docker push`` into an
            endpoint on this machine: only layers some node lacks leave it), or ``auto`` (push,
            unless a node holds some of the image's layers in a form push would send again, or
            the engine cannot reach this machine's loopback).
    """

    tls_verify: bool = True
    containerd_address: str | None = None
    containerd_namespace: str | None = None
    export: Export = "auto"


class Closeable:
    """Context-manager plumbing for sources; subclasses override :meth:`close`."""

    def close(self) -> None:
        """Release what the source holds; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def name_or_none(text: str) -> str | None:
    """``text`` as a normalized image name, or None when it is not a valid one."""
    try:
        return normalize(text)
    except UsageError:
        return None
