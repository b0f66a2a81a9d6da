"""Images the cluster tests build in the local Docker engine (no registry is reachable here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

from nodeload.sandbox import SandboxError, static_busybox


def socat_image(client: docker.DockerClient, tag: str) -> str:
    """A small image with ``sh``, ``sleep`` and ``socat`` (what the agent chart asks of its image,
    whose default ``alpine/socat`` cannot be pulled here): the host's static busybox and its
    ``socat`` with the shared libraries it links. Returns the image ID.

    Raises:
        SandboxError: No socat on this machine, or the build failed.
    """
    socat = shutil.which("socat")
    if socat is None:
        raise SandboxError("socat is not installed on this machine")
    with tempfile.TemporaryDirectory(prefix="nodeload-socat-image-") as tmp:
        root = Path(tmp) / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copyfile(static_busybox(), root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        applets = subprocess.run(
            [root / "bin" / "busybox", "--list"], capture_output=True, text=True, check=True
        )
        for applet in applets.stdout.split():
            if applet != "busybox":
                os.symlink("busybox", root / "bin" / applet)
        for path in [socat, *_libraries(socat)]:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(os.path.realpath(path), target)
            target.chmod(0o755)
        (Path(tmp) / "Dockerfile").write_text(
            'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\nCMD ["/bin/sh"]\n'
        )
        try:
            image, _ = client.images.build(path=tmp, tag=tag, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            raise SandboxError(f"building {tag}: {exc.msg}") from exc
    return str(image.id)


def _libraries(program: str) -> list[str]:
    """The shared objects ``program`` loads, the dynamic loader included (``ldd``)."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+)\s+\(0x", out)
