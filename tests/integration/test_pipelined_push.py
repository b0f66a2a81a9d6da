"""A cold push from the Docker engine sends each layer as soon as it is compressed.

The real engine, a real containerd behind the real sshd; the library API with a progress sink
that records every event in order. "sending N of M blobs" is said once the whole image is
prepared (the export finished and the manifest exists): a layer committed before that message
went out while the export was still running.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from nodeload import PushOptions, push
from nodeload.transports.ssh import SSHOptions
from tests.helpers.docker_images import build_image, docker_client, remove_images
from tests.integration.nodes import Containerd, Sshd

pytestmark = pytest.mark.integration

TAG = f"nodeload-test/pipelined-{os.getpid()}:v1"
LAYERS = [(91, 12 << 20), (92, 12 << 20), (93, 12 << 20)]


class Recorder:
    """Every progress event, in order: ("done", digest) and ("say", text)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def blob_started(self, node: str, digest: str, total: int, already: int) -> object:
        return digest

    def advance(self, handle: object, n: int) -> None:
        pass

    def blob_done(self, handle: object) -> None:
        self.events.append(("done", str(handle)))

    def message(self, node: str, text: str) -> None:
        self.events.append(("say", text))


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    try:
        client = docker_client()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable ({exc})")
    remove_images(client, "pipelined")
    build_image(client, TAG, LAYERS, label="pipelined")
    yield TAG
    remove_images(client, "pipelined", mine=True)
    client.close()


def _options(sshd: Sshd, node: Containerd) -> PushOptions:
    ssh = SSHOptions(identity=sshd.client_key, known_hosts=sshd.known_hosts)
    return PushOptions.of(export="save", socket=str(node.socket), ssh=ssh, name="example.com/piped:v1")


def test_layers_reach_the_node_before_the_export_ends(
    image: str, sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # cold: every layer is compressed
    recorder = Recorder()

    (result,) = push(image, [sshd.node], _options(sshd, fresh_containerd), progress=recorder)

    assert result.status == "ok", result.error
    sending = next(i for i, (kind, text) in enumerate(recorder.events) if text.startswith("sending"))
    early = [digest for kind, digest in recorder.events[:sending] if kind == "done"]
    assert early, recorder.events  # at least one layer was on the node before the manifest existed
    layers = client_layers(image)
    assert len(early) <= len(layers)
    # Sent early is sent, not found: the report adds up as for any cold push.
    assert result.blobs_skipped == 0 and result.bytes_skipped == 0
    assert result.blobs_sent == result.blobs_total
    stored = fresh_containerd.ctr("content", "ls", "--quiet").split()
    assert set(early) <= set(stored)
    assert "write_early" in result.timings

    (again,) = push(image, [sshd.node], _options(sshd, fresh_containerd))
    assert (again.bytes_sent, again.blobs_sent) == (0, 0)


def test_a_node_holding_the_layers_gets_none_early(
    image: str, sshd: Sshd, fresh_containerd: Containerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker save | ctr import leaves each layer uncompressed, under its diffID: a twin of ours.
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    ctr = ["ctr", "--address", str(fresh_containerd.socket), "-n", "k8s.io", "images", "import", "-"]
    subprocess.run(ctr, stdin=save.stdout, check=True, capture_output=True, timeout=120)
    assert save.wait(60) == 0
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    (result,) = push(image, [sshd.node], _options(sshd, fresh_containerd))

    assert result.status == "ok", result.error
    # Only our manifest crosses: the import brought the config, the layers are swapped for twins.
    assert result.blobs_sent == 1
    assert result.bytes_sent < 64 * 1024


def client_layers(image: str) -> list[str]:
    """The image's diffIDs, as the engine reports them."""
    client = docker.from_env()
    try:
        return list(client.images.get(image).attrs["RootFS"]["Layers"])
    finally:
        client.close()
