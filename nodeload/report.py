"""Per-node results, and their JSON and one-line text forms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NodeResult:
    """What happened on one node. ``bytes_sent`` counts blob bytes written over the wire."""

    node: str
    image: str = ""  # the IMAGE argument as the user wrote it
    status: str = "pending"  # "ok" | "failed" once done
    error: str | None = None
    namespace: str = ""
    name: str = ""
    digest: str = ""
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
    transport: str = ""  # how the node was reached: ssh-forward, ssh-exec:sudo:socat, ctr-import...
    export: str | None = None  # how a Docker-engine image left the engine: docker-save, docker-push, none
    via: str = "push"  # "push", or "peer-pull": pulled from a seed node through the cluster's mirror
    socket: str = ""
    containerd_version: str = ""
    warnings: list[str] = field(default_factory=list)
    # Seconds spent per phase: connect (first image only), plan, write, unpack, record.
    timings: dict[str, float] = field(default_factory=dict)

    # The exception behind ``error`` (not in the JSON report).
    cause: BaseException | None = field(default=None, repr=False, compare=False)
    # Blobs this run sent, over every attempt: a retry finds them on the node, but they are not
    # "skipped" (not in the JSON report).
    sent_digests: set[str] = field(default_factory=set, repr=False, compare=False)
    # Bytes of each blob that earlier attempts of this run sent before they failed: a later attempt
    # resumes after them, and they are not "resumed" from an earlier run (not in the JSON report).
    partial_bytes: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the push succeeded."""
        return self.status == "ok"

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``timings[phase]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0.0) + time.monotonic() - start, 4)

    def fail(self, cause: BaseException, seconds: float | None = None) -> None:
        """Record the failure ``cause`` (its text is the report's ``error``)."""
        self.status, self.error, self.cause = "failed", str(cause), cause
        if seconds is not None:
            self.seconds = seconds

    def retry(self) -> None:
        """Forget a failure that another attempt will try to overcome."""
        self.status, self.error, self.cause = "pending", None, None
        self.attempts += 1

    def to_json(self) -> dict[str, Any]:
        """The JSON object for ``--json``."""
        data = asdict(self)
        del data["cause"], data["sent_digests"], data["partial_bytes"]
        return data


def human_bytes(n: int) -> str:
    """Bytes in the unit a person reads fastest (1024-based)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
