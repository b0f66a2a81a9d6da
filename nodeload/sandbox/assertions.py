"""Checks of a push against what the node itself says, independently of nodeload's own report.

For users' pipelines (the pytest plugin exposes them) and for nodeload's own suites:

- :func:`assert_on_node`: the image record is there, CRI has indexed it, and it runs;
- :func:`assert_bytes`: what nodeload reported sending is what the node's network interface
  received (within SSH/gRPC overhead) and what its content store gained;
- :func:`assert_only_changed_layers`: a push sent exactly the blobs the node lacked.

Each takes :class:`NodeState` snapshots (the node's eth0 counter and content store, read with
``docker exec``) and fails with a message that says what differed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodeload.report import human_bytes

if TYPE_CHECKING:
    from nodeload.report import NodeResult
    from nodeload.sandbox.node import NodeContainer

CRI_LABEL = "io.cri-containerd.image=managed"
CONTENT_ROOT = "/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256"
# SSH handshake, gRPC calls, TCP/IP headers of a push that sends nothing.
FIXED_OVERHEAD = 256 * 1024


@dataclass(frozen=True)
class NodeState:
    """What a node holds and has received, at one moment."""

    rx_bytes: int  # eth0's receive counter (headers included)
    content: Mapping[str, int]  # blob digest -> size in its content store (every namespace)


def node_state(node: NodeContainer) -> NodeState:
    """Read ``node``'s receive counter and content store."""
    listing = node.check_output(
        ["sh", "-c", f"[ ! -d {CONTENT_ROOT} ] || find {CONTENT_ROOT} -type f -printf '%f %s\\n'"]
    )
    content = {
        f"sha256:{name}": int(size) for name, size in (line.split() for line in listing.splitlines() if line)
    }
    return NodeState(node.rx_bytes(), content)


def assert_on_node(
    node: NodeContainer, image: str, *, namespace: str = "k8s.io", run: bool = True, prints: str | None = None
) -> str:
    """The image record ``image`` exists, CRI indexed it (k8s.io), and ``ctr run`` of it works.

    Returns:
        What the image printed when run ("" without ``run``).

    Raises:
        AssertionError: naming what is missing.
    """
    listing = node.check_output(["ctr", "-n", namespace, "images", "ls"]).splitlines()[1:]
    records = {line.split()[0]: line for line in listing if line.strip()}
    if image not in records:
        known = ", ".join(sorted(records)) or "none"
        raise AssertionError(f"no image {image} in namespace {namespace} of the node (it has: {known})")
    if namespace == "k8s.io" and CRI_LABEL not in records[image]:
        raise AssertionError(f"{image} is on the node but CRI has not indexed it (no {CRI_LABEL} label)")
    if not run:
        return ""
    container = f"nodeload-check-{secrets.token_hex(4)}"
    try:
        output = node.check_output(["ctr", "-n", namespace, "run", "--rm", image, container]).strip()
    except Exception as err:
        raise AssertionError(f"{image} is on the node but does not run: {err}") from err
    if prints is not None and output != prints:
        raise AssertionError(f"{image} ran but printed {output!r}, not {prints!r}")
    return output


def assert_bytes(
    result: NodeResult,
    before: NodeState,
    after: NodeState,
    *,
    max_over: float = 0.05,
    fixed: int = FIXED_OVERHEAD,
) -> None:
    """``result``'s reported bytes agree with the node: its NIC received them (at most
    ``max_over`` more, plus ``fixed`` bytes of handshakes and calls), and its content store grew
    by the blobs it reported sending."""
    if not result.ok:
        raise AssertionError(f"the push to {result.node} failed: {result.error}")
    received = after.rx_bytes - before.rx_bytes
    bound = result.bytes_sent * (1 + max_over) + fixed
    if received > bound:
        raise AssertionError(
            f"{result.node} received {human_bytes(received)} for a push that reported sending "
            f"{human_bytes(result.bytes_sent)}: more than the bound of {human_bytes(int(bound))}"
        )
    if received < result.bytes_sent:
        raise AssertionError(
            f"{result.node} received {human_bytes(received)}, less than the {human_bytes(result.bytes_sent)} "
            "the push reported sending"
        )
    new = _new_blobs(before, after)
    gained = sum(new.values())
    if gained > result.bytes_sent + result.bytes_resumed:
        raise AssertionError(
            f"{result.node}'s content store gained {human_bytes(gained)} ({len(new)} blobs), more than the "
            f"{human_bytes(result.bytes_sent + result.bytes_resumed)} the push reported"
        )


def assert_only_changed_layers(before: NodeState, after: NodeState, result: NodeResult) -> None:
    """The push sent exactly the blobs the node lacked: every blob it sent is new on the node,
    and it sent nothing the node already had."""
    new = _new_blobs(before, after)
    if result.blobs_sent != len(new) or result.bytes_sent + result.bytes_resumed != sum(new.values()):
        listed = ", ".join(f"{d[:19]} ({human_bytes(s)})" for d, s in new.items()) or "none"
        raise AssertionError(
            f"{result.node}: the push sent {result.blobs_sent} blobs, {human_bytes(result.bytes_sent)}, "
            f"but the node gained {len(new)} blobs, {human_bytes(sum(new.values()))}: {listed}"
        )


def _new_blobs(before: NodeState, after: NodeState) -> dict[str, int]:
    return {digest: size for digest, size in after.content.items() if digest not in before.content}
