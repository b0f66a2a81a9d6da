"""Fixtures: a real containerd and a real sshd as local processes."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.registry import Registry, need_registry, start_registry
from tests.integration.cli import USER, Cli
from tests.integration.nodes import Containerd, Sshd, start_containerd, start_sshd

# The users of the registry with htpasswd auth.
REGISTRY_USERS = {"puller": "pull-secret-1"}


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


@pytest.fixture(scope="session")
def cli(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """The CLI with an empty HOME (no ~/.ssh keys or config) and no ssh-agent."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(tmp_path_factory.mktemp("home"))
    env["COLUMNS"] = "1000"  # rich would wrap messages (and paths inside them) at 80 columns
    return Cli(sshd, env)


@pytest.fixture(scope="session")
def host_fingerprint(sshd: Sshd) -> str:
    """SHA256 fingerprint of the sshd's real host key, as ssh-keygen prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.root / "host_ed25519.pub")], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


@pytest.fixture(scope="session")
def login_user(sshd: Sshd) -> str:
    """A non-root account that logs in to the test sshd with the same client key.

    Created when missing and left in place (concurrent sessions may share it); it has no
    password and no keys of its own, so the system's sshd lets nobody in as it.
    """
    try:
        pwd.getpwnam(USER)
    except KeyError:
        added = subprocess.run(["useradd", "-m", USER], capture_output=True, text=True)
        if added.returncode and "already exists" not in added.stderr:
            pytest.skip(f"cannot add user {USER}: {added.stderr.strip()}")
    # useradd leaves the password locked ("!"), and sshd without PAM refuses a locked account
    # even with a valid key; "*" unlocks it and still matches no password.
    subprocess.run(["usermod", "-p", "*", USER], check=True)
    # sshd reads the (global) AuthorizedKeysFile as the user: open the 0700 directory holding it.
    sshd.root.chmod(0o711)
    return USER


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A distribution registry on 127.0.0.1 over plain HTTP, open to anyone."""
    need_registry()
    with start_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A distribution registry that wants a login (htpasswd: REGISTRY_USERS, Basic auth)."""
    need_registry()
    with start_registry(tmp_path_factory.mktemp("auth-registry"), REGISTRY_USERS) as server:
        yield server
