"""What a run leaves on a node when it cannot finish, and when that may be reclaimed.

Every push holds a containerd lease while it writes (it pins what the push relies on until the
image record does), and unfinished blob uploads stay as ingests named ``nodeload-<digest>`` so
that a rerun resumes them. A run that ends, even in failure, deletes its lease; one that is
killed or loses the node cannot, and its lease would pin content for a day.

A lease carries who made it: this machine's name, the process ID and that process's start time
(so a recycled PID is not mistaken for the run), the image and when it started. That is enough
for a later run on the same machine to delete the leases of runs that are gone, and for
``nodeload gc`` to judge the rest by age. The rules are pure functions here; the containerd
calls are in :mod:`nodeload.containerd.client`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

LABEL_PREFIX = "nodeload.io/"
LABEL_HOST = LABEL_PREFIX + "host"
LABEL_PID = LABEL_PREFIX + "pid"
LABEL_PID_START = LABEL_PREFIX + "pid-start"
LABEL_IMAGE = LABEL_PREFIX + "image"
LABEL_STARTED = LABEL_PREFIX + "started"
LEASE_PREFIX = "nodeload-"
INGEST_PREFIX = "nodeload-"
# What nodeload gc leaves alone by default: a push from another machine may still be running.
DEFAULT_OLDER_THAN = timedelta(hours=1)


@cache
def host_name() -> str:
    """This machine's name, as leases record it."""
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def run_labels(image: str | None, now: datetime) -> dict[str, str]:
    """The labels of a lease this process creates for ``image``."""
    pid = os.getpid()
    labels = {
        LABEL_HOST: host_name(),
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start(pid) or "",
        LABEL_STARTED: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if image:
        labels[LABEL_IMAGE] = image[:200]  # label values are bounded by containerd (4 KiB)
    return labels


@dataclass(frozen=True)
class Lease:
    """A lease as the node lists it."""

    id: str
    created: datetime
    labels: dict[str, str]


def abandoned(
    lease: Lease, now: datetime, older_than: timedelta, held: frozenset[str] = frozenset()
) -> str | None:
    """Why ``lease`` belongs to no live nodeload run (None: it may, or it is not nodeload's).

    Args:
        lease: a lease on the node.
        now: the current time (UTC).
        older_than: the age past which a lease whose run cannot be checked counts as abandoned.
        held: leases this process holds right now (never abandoned).
    """
    if not lease.id.startswith(LEASE_PREFIX) or lease.id in held:
        return None
    labels = lease.labels
    if labels.get(LABEL_HOST) == host_name() and labels.get(LABEL_PID, "").isdigit():
        pid = int(labels[LABEL_PID])
        started = process_start(pid)
        if started is None or started != labels.get(LABEL_PID_START, started):
            return f"its run (process {pid} on this machine) is gone"
        if pid == os.getpid():
            return "a session of this run that was lost"
        return None  # a live run on this machine
    if now - lease.created >= older_than:
        where = labels.get(LABEL_HOST, "an unknown machine")
        return f"made {_age(now - lease.created)} ago by {where}, older than {_age(older_than)}"
    return None


@dataclass(frozen=True)
class Ingest:
    """An unfinished upload on the node."""

    ref: str
    offset: int
    total: int
    updated: datetime


def stale(ingest: Ingest, now: datetime, older_than: timedelta) -> bool:
    """Whether a nodeload ingest has not moved for ``older_than`` (a live upload moves every second)."""
    return ingest.ref.startswith(INGEST_PREFIX) and now - ingest.updated >= older_than


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600}h"
    if seconds >= 120:
        return f"{seconds // 60}m"
    return f"{seconds}s"
