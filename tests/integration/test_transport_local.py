"""The library API with a second transport: containerd's socket on this machine, no SSH."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import nodeload
from nodeload.transports.bridge import SocketUnavailable
from nodeload.transports.local import LocalTransport
from tests.helpers.oci import write_layout
from tests.integration.nodes import Containerd

pytestmark = pytest.mark.integration


def test_push_through_the_local_transport(fresh_containerd: Containerd, tmp_path: Path) -> None:
    info = write_layout(tmp_path / "img", ref="v1", seed=31)
    store = nodeload.StoreOptions(name="example.com/local:v1", socket=str(fresh_containerd.socket))
    options = nodeload.PushOptions(store=store)
    [result] = nodeload.push(f"oci:{info.path}:v1", [nodeload.NodeSpec("this-host", reach="local")], options)
    assert (result.status, result.error) == ("ok", None)
    assert result.node == "this-host" and result.wire_bytes_sent is None  # nothing crossed a network
    assert result.image == f"oci:{info.path}:v1"
    assert result.bytes_sent == sum(len(blob) for blob in info.blobs.values())
    assert "example.com/local:v1" in fresh_containerd.ctr("images", "ls", "--quiet")


def test_local_transport_explains_a_missing_socket(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sock"
    with pytest.raises(SocketUnavailable, match=f"{missing} does not exist") as err:
        asyncio.run(LocalTransport().open_socket(str(missing)))
    assert err.value.missing
