"""Images built in the local Docker engine without a registry (FROM scratch + busybox)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

BUSYBOX = Path("/bin/busybox")
TEST_LABEL = "nodeload.test"
OWNER_LABEL = "nodeload.test.pid"


def docker_client() -> docker.DockerClient:
    """A client of the local engine; raises when there is none."""
    client = docker.from_env(version="auto")  # the SDK's default API version is too new for Docker 20.10
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
    """Build ``tag``: busybox (unless ``base``) plus one COPY layer per ``(seed, size)`` payload.

    Payload files have fixed contents and mtimes, so a layer's diffID depends
    only on its seed and size. Returns the image ID.
    """
    context = Path(tempfile.mkdtemp(prefix="nodeload-build-"))
    try:
        lines = [f"FROM {base}" if base else "FROM scratch"]
        if not base:
            shutil.copy(BUSYBOX, context / "busybox")
            os.utime(context / "busybox", (0, 0))
            lines.append("COPY busybox /bin/busybox")
        for seed, size in payloads:
            name = f"payload-{seed}-{size}"
            (context / name).write_bytes(random.Random(seed).randbytes(size))
            os.utime(context / name, (0, 0))
            lines.append(f"COPY {name} /data/{name}")
        lines.append('CMD ["/bin/busybox", "true"]')
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        image, _ = client.images.build(
            path=str(context), tag=tag, rm=True, labels={TEST_LABEL: label, OWNER_LABEL: str(os.getpid())}
        )
        return str(image.id)
    finally:
        shutil.rmtree(context, ignore_errors=True)


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
