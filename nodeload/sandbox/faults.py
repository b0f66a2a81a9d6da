"""Faults injected into sandbox nodes at a chosen moment of a push: the harness of the fault matrix.

A fault is something that happens to a node (its SSH sessions are killed, containerd restarts,
its link goes down for a while, its disk fills up) or to nodeload itself (``kill -9``). A
:class:`FaultAt` progress sink fires one at a phase of a push:

- ``write``: once ``after_bytes`` of blob data went out (in the middle of a blob);
- ``unpack``: when the first layer starts unpacking;
- ``record``: after unpacking, before the image record is written.

The sink runs on the push's event loop, so the push is paused while the fault is set up and
meets it when it goes on, as it would on a real node. ``python -m nodeload.sandbox.faults``
runs a push that kills itself (``SIGKILL``) at a phase, for the ``kill -9`` cells.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from nodeload.progress import NullProgress, ProgressSink
from nodeload.sandbox.node import NodeContainer

FAULTS = ("ssh-killed", "containerd-restarted", "link-down", "nodeload-killed", "disk-full")
PHASES = ("write", "unpack", "record")
FILLER = "/var/lib/containerd/nodeload-filler"


class FaultAt:
    """A progress sink that calls ``fault`` once, when the push reaches ``phase``."""

    def __init__(
        self,
        phase: str,
        fault: Callable[[], None],
        *,
        after_bytes: int = 2 << 20,
        inner: ProgressSink | None = None,
    ) -> None:
        """Fire ``fault`` at ``phase`` (one of PHASES); events are passed on to ``inner``."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}: one of {', '.join(PHASES)}")
        self.phase, self._fault, self._after = phase, fault, after_bytes
        self._inner = inner or NullProgress()
        self._sent = 0
        self.fired = False

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            self._fault()

    def blob_started(self, node: str, digest: str, total: int, already: int) -> object:
        return self._inner.blob_started(node, digest, total, already)

    def advance(self, handle: object, n: int) -> None:
        self._inner.advance(handle, n)
        self._sent += n
        if self.phase == "write" and self._sent >= self._after:
            self._fire()

    def blob_done(self, handle: object) -> None:
        self._inner.blob_done(handle)

    def message(self, node: str, text: str) -> None:
        self._inner.message(node, text)
        if (self.phase == "unpack" and text.startswith("unpacking")) or (
            self.phase == "record" and text == "tagging"
        ):
            self._fire()


# -- what can happen to a node ---------------------------------------------------------------


def kill_ssh_sessions(node: NodeContainer) -> None:
    """Kill every SSH session on the node (the listening sshd stays: a reconnect works)."""
    node.check_output(["sh", "-c", "pkill -KILL -f '^sshd: ' || true"])


def restart_containerd(node: NodeContainer) -> None:
    """Kill containerd (``SIGKILL``, as a crash) and start it again, detached."""
    socket = node.containerd_socket
    node.check_output(
        ["sh", "-c", "pkill -KILL -x containerd; while pgrep -x containerd >/dev/null; do sleep 0.05; done"]
    )
    log = "/var/log/containerd-restart.log"
    start = f"exec containerd --config /etc/containerd/config.toml --address {socket} >{log} 2>&1"
    node.get_wrapped_container().exec_run(["sh", "-c", start], detach=True)


def link_down(node: NodeContainer, seconds: float = 5.0) -> None:
    """Take the node's eth0 down for ``seconds`` (from now, in the background)."""
    script = f"ip link set eth0 down; sleep {seconds}; ip link set eth0 up"
    node.get_wrapped_container().exec_run(["sh", "-c", script], detach=True)


def fill_disk(node: NodeContainer) -> None:
    """Fill containerd's disk (a ``disk`` variant node) with a file, to the last byte."""
    node.check_output(["sh", "-c", f"dd if=/dev/zero of={FILLER} bs=1M 2>/dev/null; true"])


def free_disk(node: NodeContainer) -> None:
    """Remove what :func:`fill_disk` wrote."""
    node.check_output(["rm", "-f", FILLER])


def node_fault(kind: str, node: NodeContainer) -> Callable[[], None]:
    """The fault ``kind`` (one of FAULTS but ``nodeload-killed``) as a callable for :class:`FaultAt`."""
    faults: dict[str, Callable[[], None]] = {
        "ssh-killed": lambda: kill_ssh_sessions(node),
        "containerd-restarted": lambda: restart_containerd(node),
        "link-down": lambda: link_down(node),
        "disk-full": lambda: fill_disk(node),
    }
    return faults[kind]


def leases(node: NodeContainer, namespace: str = "k8s.io") -> list[str]:
    """nodeload's leases on the node."""
    out = node.check_output(["ctr", "-n", namespace, "leases", "ls", "-q"])
    return [line for line in out.split() if line.startswith("nodeload-")]


# -- kill -9 of nodeload -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m nodeload.sandbox.faults --kill-at PHASE --node N -F CONFIG --name REF IMAGE``
    (``--export E`` for a Docker-engine IMAGE)."""
    parser = argparse.ArgumentParser(description="push an image and SIGKILL this process at a phase")
    parser.add_argument("--kill-at", choices=PHASES, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("-F", "--ssh-config", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--export", choices=("auto", "save", "push"), default="auto")
    parser.add_argument("image")
    args = parser.parse_args(argv)

    from nodeload.api import push
    from nodeload.options import PushOptions
    from nodeload.transports.ssh_connect import SSHOptions

    sink = FaultAt(args.kill_at, lambda: os.kill(os.getpid(), signal.SIGKILL))
    options = PushOptions.of(name=args.name, export=args.export, ssh=SSHOptions(ssh_config=args.ssh_config))
    results = push(args.image, [args.node], options, progress=sink)
    print(f"not killed: the push ended ({results[0].status}) before {args.kill_at}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
