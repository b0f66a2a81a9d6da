"""Choosing the seeds inside each node's own session (nodeload.fanout.push_all with seeds).

The orchestration alone, with stand-in nodes: what the real nodes do in a seeded run is the
e2e suite's (tests/e2e/test_seeds.py). Here: the choice waits for every node but not for a node
that failed, a node waiting on others gives up its place among those worked on (so --parallel
smaller than the number of mirror nodes cannot deadlock), and a node without a mirror does not
wait at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import nodeload.mirror
from nodeload.errors import NodeUnreachable
from nodeload.fanout import ImageJob, NodeJob, push_all
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import NullProgress, ProgressSink
from nodeload.report import NodeResult
from nodeload.stores.base import Delivery, PeerPull, PreparedImage, StoreInfo, WriteOptions, Written
from nodeload.transports.base import Traffic


@dataclass
class Node:
    """A stand-in node: what it lacks, whether it pulls through a mirror, what happened to it."""

    missing: int
    mirror: bool = True
    unreachable: bool = False
    events: list[str] = field(default_factory=list)
    sessions: int = 0


class Transport:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def __aenter__(self) -> Transport:
        if self.node.unreachable:
            raise NodeUnreachable("no route to host")
        self.node.sessions += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def executor(self) -> Node:
        return self.node  # read by the stand-in mirror check below

    def traffic(self) -> Traffic | None:
        return None


async def stand_in_mirrored(executor: Node, cluster: object = None) -> bool:
    return executor.mirror


class Target:
    def __init__(self, node: Node, busy: list[int], limit: int) -> None:
        self.node, self.busy, self.limit = node, busy, limit

    async def missing_bytes(self, image: PreparedImage, namespace: str) -> int:
        return self.node.missing

    about = StoreInfo("/run/containerd/containerd.sock", "1.7.13", "stand-in")

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        self.busy.append(1)
        assert len(self.busy) <= self.limit  # never more nodes pushed to at once than --parallel
        await asyncio.sleep(0.01)
        self.busy.pop()
        self.node.events.append("push")
        return Delivery()

    async def pull_from_mirror(
        self, image: PreparedImage, options: WriteOptions, peers: PeerPull
    ) -> Delivery | str:
        self.node.events.append("waiting")
        if not await peers.wait_for_seeds():
            return "no seed node got the image: pushed directly"
        self.node.events.append("pull")
        return Delivery(delivered_by="peer-pull")


def run(nodes: list[Node], *, parallel: int = 8, seeds: int = 1) -> list[NodeResult]:
    """One image to ``nodes``; the results, node by node (within 10 s: a deadlock fails)."""
    busy: list[int] = []

    @contextlib.asynccontextmanager
    async def open_store(transport: Any, node: NodeSpec, progress: ProgressSink) -> AsyncIterator[Target]:
        yield Target(transport.node, busy, parallel)

    options = WriteOptions(name="docker.io/library/app:1")

    async def prepare(listener: object, nodes: object) -> PreparedImage:
        return PreparedImage(Any, options)  # type: ignore[arg-type]  # never read

    image = ImageJob("app", prepare)  # type: ignore[arg-type]
    jobs = [NodeJob(NodeSpec(f"node-{i}"), Transport(n)) for i, n in enumerate(nodes)]  # type: ignore[arg-type]
    pushing = push_all([image], jobs, open_store, NullProgress(), parallel=parallel, seeds=seeds)
    return asyncio.run(asyncio.wait_for(pushing, timeout=10))


@pytest.fixture(autouse=True)
def _mirrors_of_the_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodeload.mirror, "mirrored", stand_in_mirrored)


def test_the_node_with_the_least_to_receive_is_the_seed_and_the_rest_pull() -> None:
    nodes = [Node(100), Node(5), Node(50), Node(7)]
    results = run(nodes)
    assert [r.delivered_by for r in results] == ["peer-pull", "push", "peer-pull", "peer-pull"]
    assert all(r.ok for r in results)
    assert all(n.sessions == 1 for n in nodes)  # the choice was made inside each node's one session
    assert nodes[0].events == ["waiting", "pull"]


def test_fewer_places_than_mirror_nodes_cannot_deadlock() -> None:
    nodes = [Node(100 - i) for i in range(6)]
    results = run(nodes, parallel=1, seeds=2)
    assert sorted(r.delivered_by or "" for r in results) == ["peer-pull"] * 4 + ["push"] * 2
    assert all(r.ok for r in results)


def test_nodes_without_a_mirror_do_not_wait_and_are_no_seeds() -> None:
    nodes = [Node(0, mirror=False), Node(100), Node(200), Node(0, mirror=False)]
    results = run(nodes)
    assert [r.delivered_by for r in results] == ["push", "push", "peer-pull", "push"]


def test_a_node_that_cannot_be_reached_is_not_waited_for() -> None:
    nodes = [Node(0, unreachable=True), Node(100), Node(200)]
    results = run(nodes)
    assert not results[0].ok and "no route to host" in (results[0].error or "")
    assert [r.delivered_by for r in results[1:]] == ["push", "peer-pull"]


def test_without_any_mirror_every_node_is_pushed_to() -> None:
    nodes = [Node(0, mirror=False) for _ in range(3)]
    assert [r.delivered_by for r in run(nodes)] == ["push"] * 3
