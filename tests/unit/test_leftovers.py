"""When a nodeload lease or upload on a node belongs to no live run (nodeload.leftovers), and the
argument types of ``gc`` and ``cache prune``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from nodeload.cli.arguments import duration, size
from nodeload.leftovers import (
    LABEL_HOST,
    LABEL_PID,
    LABEL_PID_START,
    Ingest,
    Lease,
    abandoned,
    host_name,
    process_start,
    run_labels,
    stale,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _lease(
    labels: dict[str, str], age: timedelta = timedelta(minutes=5), lease_id: str = "nodeload-abc"
) -> Lease:
    return Lease(lease_id, NOW - age, labels)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_of_a_dead_process_here_is_abandoned_at_any_age() -> None:
    lease = _lease({LABEL_HOST: host_name(), LABEL_PID: str(_dead_pid()), LABEL_PID_START: "1"})
    assert "is gone" in (abandoned(lease, NOW, HOUR) or "")


def test_a_lease_of_a_live_process_here_is_kept() -> None:
    parent = os.getppid()
    lease = _lease(
        {LABEL_HOST: host_name(), LABEL_PID: str(parent), LABEL_PID_START: process_start(parent) or ""}
    )
    assert abandoned(lease, NOW, HOUR) is None
    assert abandoned(_lease(lease.labels, age=timedelta(days=3)), NOW, HOUR) is None  # age does not matter


def test_a_recycled_pid_is_not_the_run() -> None:
    parent = os.getppid()
    lease = _lease({LABEL_HOST: host_name(), LABEL_PID: str(parent), LABEL_PID_START: "12345678"})
    assert "is gone" in (abandoned(lease, NOW, HOUR) or "")


def test_this_process_lease_is_abandoned_only_when_not_held() -> None:
    labels = run_labels("app:v1", NOW)
    assert labels[LABEL_PID] == str(os.getpid()) and labels["nodeload.io/image"] == "app:v1"
    lease = _lease(labels)
    assert abandoned(lease, NOW, HOUR, held=frozenset({lease.id})) is None
    assert "lost" in (abandoned(lease, NOW, HOUR) or "")


def test_another_machine_lease_is_judged_by_age() -> None:
    labels = {LABEL_HOST: "laptop-elsewhere", LABEL_PID: "42", LABEL_PID_START: "7"}
    assert abandoned(_lease(labels, age=timedelta(minutes=59)), NOW, HOUR) is None
    reason = abandoned(_lease(labels, age=timedelta(hours=3)), NOW, HOUR) or ""
    assert "laptop-elsewhere" in reason and "3h" in reason
    assert abandoned(_lease({}, age=timedelta(hours=3)), NOW, HOUR)  # no labels at all: by age too


def test_leases_of_others_are_never_nodeload_s() -> None:
    assert abandoned(_lease({}, age=timedelta(days=9), lease_id="k8s.io-pull-1"), NOW, HOUR) is None


def test_an_upload_is_stale_once_it_stopped_moving() -> None:
    moving = Ingest("nodeload-sha256:aa", 10, 100, NOW - timedelta(seconds=2))
    idle = Ingest("nodeload-sha256:aa", 10, 100, NOW - timedelta(hours=2))
    foreign = Ingest("unpack-sha256:aa", 10, 100, NOW - timedelta(days=2))
    assert not stale(moving, NOW, HOUR) and stale(idle, NOW, HOUR) and not stale(foreign, NOW, HOUR)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "value"), [("1000", 1000), ("500M", 500 << 20), ("10G", 10 << 30), ("1.5GiB", 3 << 29)]
)
def test_sizes(text: str, value: int) -> None:
    assert size(text) == value


@pytest.mark.parametrize("text", ["", "1w", "-1h", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid age"):
        duration(text)
