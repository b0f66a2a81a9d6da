"""A second transport slots into the same push logic: containerd's socket on this machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nodeload.progress import NullProgress
from nodeload.push import Prepared, push_all
from nodeload.sources import open_source
from nodeload.targets.containerd import TargetOptions
from nodeload.transports import LocalTransport
from tests.helpers.oci import write_layout
from tests.integration.nodes import Containerd

pytestmark = pytest.mark.integration


def test_push_through_the_local_transport(fresh_containerd: Containerd, tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", ref="v1", seed=31)

    def prepare() -> Prepared:
        return Prepared(open_source(f"oci:{info.path}:v1"), TargetOptions(name="example.com/local:v1"))

    [result] = asyncio.run(
        push_all(prepare, [LocalTransport("this-host")], NullProgress(), socket=str(fresh_containerd.socket))
    )
    assert (result.status, result.error) == ("ok", None)
    assert result.node == "this-host" and result.wire_bytes_sent is None  # nothing crossed a network
    assert result.bytes_sent == sum(len(blob) for blob in info.blobs.values())
    assert "example.com/local:v1" in fresh_containerd.ctr("images", "ls", "--quiet")


def test_local_transport_explains_a_missing_socket(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sock"
    transport = LocalTransport()
    assert asyncio.run(transport.why_unusable(str(missing))) == f"{missing} does not exist"
    assert asyncio.run(transport.can_open(str(missing))) is False
