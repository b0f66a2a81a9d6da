"""Build small, deterministic test images in the local Docker engine, without a registry.

An image is ``FROM scratch`` + the host's static busybox + N payload layers of
pseudo-random bytes. A layer's bytes depend only on its size and seed, and file times are
fixed, so the same spec gives the same diffID whatever else changes in the image.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors

from nodeload.sandbox.node_image import SandboxError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Any fixed time will do; layer tarballs record mtimes, so they must not vary between builds.
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerSpec:
    """One payload layer: ``size_bytes`` pseudo-random bytes drawn from ``seed``."""

    size_bytes: int
    seed: int | str = 0


def build_image(
    client: docker.DockerClient,
    tag: str,
    message: str,
    layers: Sequence[LayerSpec] = (),
    *,
    base: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Build a busybox image whose command prints ``message``, plus payload layers.

    Layer order is busybox (or ``base``'s layers), then ``layers`` in the given order (one
    COPY each, the file ``/payload-NNN.bin``); the message lives only in the config, so it
    changes no layer.

    Args:
        client: Docker client of the engine to build in.
        tag: Tag to give the image, e.g. ``nodeload-test/demo:v1``.
        message: What ``docker run IMAGE`` prints.
        layers: Payload layers, bottom to top.
        base: An image to build on instead of busybox on ``scratch``.
        labels: Image labels (e.g. to find test images again for clean-up).

    Returns:
        The image id (``sha256:...``).

    Raises:
        SandboxError: No static busybox on the host, or the build failed.
    """
    with tempfile.TemporaryDirectory(prefix="nodeload-test-image-") as tmp:
        ctx = Path(tmp)
        if base:
            lines = [f"FROM {base}"]
        else:
            _write_busybox_rootfs(ctx / "rootfs")
            lines = ["FROM scratch", "COPY rootfs/ /"]
        for index, spec in enumerate(layers):
            name = f"payload-{index:03d}.bin"
            _write_payload(ctx / name, spec)
            lines.append(f"COPY {name} /{name}")
        lines.append(f"CMD {json.dumps(['/bin/busybox', 'echo', message])}")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        try:
            image, _ = client.images.build(
                path=tmp, tag=tag, rm=True, forcerm=True, labels=dict(labels or {})
            )
        except docker.errors.BuildError as exc:
            raise SandboxError(f"building test image {tag}: {exc.msg}") from exc
    return str(image.id)


def layer_diff_ids(client: docker.DockerClient, ref: str) -> list[str]:
    """Return an image's layer diffIDs (digests of the uncompressed layers), bottom first."""
    diff_ids: list[str] = client.images.get(ref).attrs["RootFS"]["Layers"]
    return diff_ids


def static_busybox() -> Path:
    """Return the host's statically linked busybox (Debian: package busybox-static).

    Raises:
        SandboxError: None found; a dynamic busybox cannot run in a ``FROM scratch`` image.
    """
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise SandboxError("no static busybox found; apt-get install busybox-static")


def _write_busybox_rootfs(rootfs: Path) -> None:
    bin_dir = rootfs / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copyfile(static_busybox(), bin_dir / "busybox")
    os.chmod(bin_dir / "busybox", 0o755)
    os.symlink("busybox", bin_dir / "sh")
    for path in (bin_dir / "busybox", bin_dir / "sh", bin_dir):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def _write_payload(path: Path, spec: LayerSpec) -> None:
    rng = random.Random(spec.seed)
    with open(path, "wb") as out:
        remaining = spec.size_bytes
        while remaining > 0:
            chunk = min(remaining, _CHUNK)
            out.write(rng.randbytes(chunk))
            remaining -= chunk
    os.chmod(path, 0o644)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP (dynamic loader) program header."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # only 64-bit ELF matters here
            return False
        order: Literal["little", "big"] = "little" if header[5] == 1 else "big"
        phoff = int.from_bytes(header[32:40], order)
        phentsize = int.from_bytes(header[54:56], order)
        phnum = int.from_bytes(header[56:58], order)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(int.from_bytes(table[i : i + 4], order) != pt_interp for i in range(0, len(table), phentsize))
