"""Images built in the local Docker engine without a registry (FROM scratch + busybox)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import docker
import docker.errors

from nodeload.sandbox import LayerSpec
from nodeload.sandbox import build_image as sandbox_build_image
from nodeload.sandbox import docker_client as sandbox_docker_client

TEST_LABEL = "nodeload.test"
OWNER_LABEL = "nodeload.test.pid"


def docker_client() -> docker.DockerClient:
    """A client of the local engine; raises when there is none."""
    client = sandbox_docker_client()
    client.ping()
    return client


def build_image(
    client: docker.DockerClient,
    tag: str,
    payloads: Sequence[tuple[int, int]],
    *,
    base: str | None = None,
    label: str = "sources",
) -> str:
    """Build ``tag``: busybox (unless ``base``) plus one layer per ``(seed, size)`` payload.

    A layer's diffID depends only on its seed and size. Images are labelled with
    the owning process, for :func:`remove_images`. Returns the image ID.
    """
    layers = [LayerSpec(size, seed) for seed, size in payloads]
    labels = {TEST_LABEL: label, OWNER_LABEL: str(os.getpid())}
    return sandbox_build_image(client, tag, tag, layers, base=base, labels=labels)


def remove_images(client: docker.DockerClient, label: str = "sources", *, mine: bool = False) -> None:
    """Remove images :func:`build_image` made with ``label``.

    With ``mine``, those of this process; else leftovers of processes that are
    gone (killed sessions), leaving concurrent sessions (pytest-xdist) alone.
    """
    images = client.images.list(filters={"label": f"{TEST_LABEL}={label}"})
    for image in sorted(images, key=lambda i: str(i.attrs.get("Created")), reverse=True):  # children first
        owner = int(image.labels.get(OWNER_LABEL, "0") or 0)
        if owner == os.getpid() if mine else not _alive(owner):
            # A failure: already gone, or the parent of another session's image.
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
