"""Fixtures: a real containerd and a real sshd as local processes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.nodes import Containerd, Sshd, start_containerd, start_sshd


def _need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None and not Path(b).exists()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install containerd openssh-server)")


@contextmanager
def _running_containerd(root: Path | None = None) -> Iterator[Containerd]:
    _need("containerd", "ctr")
    node = start_containerd(root or Path(tempfile.mkdtemp(prefix="nodeload-ctd-", dir="/var/tmp")))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """A containerd process, shared by the session (tests use distinct image names)."""
    with _running_containerd() as node:
        yield node


@pytest.fixture()
def fresh_containerd() -> Iterator[Containerd]:
    """A containerd process of one's own, for tests that need an empty store."""
    with _running_containerd() as node:
        yield node


@pytest.fixture()
def small_containerd() -> Iterator[Containerd]:
    """A containerd whose root is on a 16 MiB tmpfs: its disk fills up after a few blobs."""
    _need("containerd", "ctr")
    mount = Path(tempfile.mkdtemp(prefix="nodeload-tmpfs-", dir="/var/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        with _running_containerd(mount / "containerd") as node:
            yield node
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """An sshd on 127.0.0.1 trusting a generated client key."""
    _need("/usr/sbin/sshd", "ssh-keygen")
    root = Path(tempfile.mkdtemp(prefix="nodeload-sshd-"))
    server = start_sshd(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
