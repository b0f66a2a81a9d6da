"""Per-node results, and their JSON and one-line text forms."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodeload.stores.base import Delivery, StoreInfo, Written


class Status(StrEnum):
    """Where a push of one image to one node stands."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


@dataclass
class NodeResult:
    """What happened on one node. ``bytes_sent`` counts blob bytes written over the wire."""

    node: str
    image: str = ""  # the IMAGE argument as the user wrote it
    status: Status = Status.PENDING
    error: str | None = None
    namespace: str = ""
    name: str = ""
    digest: str = ""
    image_id: str = ""  # the config's digest: what kubelet reports as a container's imageID
    platform: str = ""
    blobs_total: int = 0
    blobs_sent: int = 0
    blobs_skipped: int = 0
    bytes_sent: int = 0
    bytes_skipped: int = 0
    bytes_resumed: int = 0  # already on the node from an interrupted earlier push
    layers_unpacked: int = 0
    attempts: int = 1  # sessions it took: more than 1 after a lost connection was retried
    seconds: float = 0.0
    cri_indexed: bool | None = None
    # TCP payload of the SSH connection as the kernel counted it (SSH, gRPC and handshake
    # included; TCP/IP headers not): what a network counter sees, within a few percent.
    wire_bytes_sent: int | None = None
    wire_bytes_received: int | None = None
    reach: str = ""  # how the node was reached: ssh-forward, ssh-exec:sudo:socat, ctr-import...
    export: str | None = None  # how a Docker-engine image left the engine: docker-save, docker-push, none
    delivered_by: str = "push"  # "push", or "peer-pull": pulled from a seed node through the cluster's mirror
    socket: str = ""
    containerd_version: str = ""
    warnings: list[str] = field(default_factory=list)
    # Seconds spent per phase: connect (first image only), plan, write, unpack, record.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the push succeeded."""
        return self.status == Status.OK

    def to_json(self) -> dict[str, Any]:
        """The JSON object for ``--json``.

        ``transport`` and ``via`` are the keys ``reach`` and ``delivered_by`` had before 0.2:
        kept, with the same values, for one release (see the README's "JSON report").
        """
        data = asdict(self)
        data["status"] = str(self.status)
        data["transport"], data["via"] = self.reach, self.delivered_by  # deprecated names
        return data

    def store(self, about: StoreInfo) -> None:
        """Say which store the image went to."""
        self.socket, self.containerd_version, self.reach = about.socket, about.version, about.reach

    def delivered(self, done: Delivery) -> None:
        """The push succeeded, doing ``done``."""
        self.status = Status.OK
        self.digest, self.platform, self.delivered_by = done.digest, done.platform, done.delivered_by
        self.image_id = done.image_id
        self.blobs_total, self.blobs_skipped = done.blobs_total, done.blobs_skipped
        self.bytes_skipped, self.layers_unpacked = done.bytes_skipped, done.layers_unpacked
        self.cri_indexed = done.cri_indexed
        self.warnings += done.warnings
        self.timings.update(done.timings)

    def count(self, written: Written) -> None:
        """What the run wrote, over every attempt so far."""
        self.bytes_sent, self.blobs_sent, self.bytes_resumed = (
            written.bytes,
            len(written.blobs),
            written.resumed,
        )


def human_bytes(n: int) -> str:
    """Bytes in the unit a person reads fastest (1024-based)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
