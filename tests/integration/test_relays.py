"""The exec bridge's python3 relay, against a real sshd that refuses stream forwarding and a real
containerd. The sshd's sessions get a PATH without socat and nc, whatever this machine has, so
python3 is the relay the node offers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli import Cli, content, images, layout
from tests.integration.nodes import Containerd, Sshd, path_without, start_sshd

pytestmark = pytest.mark.integration


# The relays the bridge prefers to python3 (bridge.py's order), and nc's other names.
_PREFERRED_RELAYS = {"socat", "nc", "nc.openbsd", "nc.traditional", "netcat"}


@pytest.fixture()
def hardened_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd with AllowStreamLocalForwarding no (CIS-hardened) whose sessions find no socat or nc."""
    path = path_without(tmp_path / "bin", _PREFERRED_RELAYS)
    server = start_sshd(tmp_path / "sshd", forwarding=False, path=path)
    yield server
    server.stop()


def test_python3_relay_carries_the_push(
    cli: Cli, hardened_sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    info = layout(tmp_path, 201)
    login = ("-i", str(hardened_sshd.client_key), "--known-hosts", str(hardened_sshd.known_hosts))
    result = cli.push_ok(info, fresh_containerd, "--name", "example.com/relay:v1", *login,
                         nodes=[hardened_sshd.node], login=False)  # fmt: skip
    assert result["reach"] == "ssh-exec:python3"
    assert content(fresh_containerd) == set(info.blobs)
    assert result["bytes_sent"] == sum(len(b) for b in info.blobs.values())
    assert "example.com/relay:v1" in images(fresh_containerd)
    again = cli.push_ok(info, fresh_containerd, "--name", "example.com/relay:v1", *login,
                        nodes=[hardened_sshd.node], login=False)  # fmt: skip
    assert again["bytes_sent"] == 0
