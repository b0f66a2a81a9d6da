"""The exec bridge with the relay this machine has (python3; no socat here), against a real sshd
that refuses stream forwarding and a real containerd."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli import Cli, content, images, layout
from tests.integration.nodes import Containerd, Sshd, start_sshd

pytestmark = pytest.mark.integration


@pytest.fixture()
def hardened_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd with AllowStreamLocalForwarding no (CIS-hardened)."""
    server = start_sshd(tmp_path / "sshd", forwarding=False)
    yield server
    server.stop()


@pytest.mark.skipif(shutil.which("socat") is not None, reason="socat would be chosen before python3")
def test_python3_relay_carries_the_push(
    cli: Cli, hardened_sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 201)
    login = ("-i", str(hardened_sshd.client_key), "--known-hosts", str(hardened_sshd.known_hosts))
    result = cli.push_ok(info, fresh_containerd, "--name", "example.com/relay:v1", *login,
                         nodes=[hardened_sshd.node], login=False)  # fmt: skip
    assert result["transport"] == "ssh-exec:python3"
    assert content(fresh_containerd) == set(info.blobs)
    assert result["bytes_sent"] == sum(len(b) for b in info.blobs.values())
    assert "example.com/relay:v1" in images(fresh_containerd)
    again = cli.push_ok(info, fresh_containerd, "--name", "example.com/relay:v1", *login,
                        nodes=[hardened_sshd.node], login=False)  # fmt: skip
    assert again["bytes_sent"] == 0
