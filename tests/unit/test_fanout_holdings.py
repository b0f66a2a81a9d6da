"""A source that asks the nodes what they hold before it prepares (nodeload.fanout with
nodeload.holdings), with stand-in nodes: every reachable node answers once connected, an
unreachable one is not waited for, and --parallel smaller than the number of nodes cannot
deadlock (a node waiting for such an image gives up its place). What real nodes answer is the
e2e suite's (tests/e2e/test_export.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeload.errors import NodeUnreachable
from nodeload.fanout import ImageJob, NodeJob, push_all
from nodeload.holdings import Holding, HoldingQuery, NodesView
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import NullProgress, ProgressSink
from nodeload.report import NodeResult
from nodeload.stores.base import Delivery, PreparedImage, StoreInfo, WriteOptions, Written
from nodeload.transports.base import Traffic

OPTIONS = WriteOptions(name="docker.io/library/app:1")


class Transport:
    def __init__(self, name: str, reachable: bool = True) -> None:
        self.name, self.reachable = name, reachable

    async def __aenter__(self) -> Transport:
        if not self.reachable:
            raise NodeUnreachable("no route to host")
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def traffic(self) -> Traffic | None:
        return None


class Target:
    """Holds the blobs named after it; answers the query with them; records what it is given."""

    def __init__(self, name: str, answering: bool, busy: list[str], limit: int) -> None:
        self.name, self.answering, self.busy, self.limit = name, answering, busy, limit

    async def holding(self, query: HoldingQuery, namespace: str) -> Holding:
        if not self.answering:
            raise NodeUnreachable("the node went away while answering")
        return Holding(blobs={d: 1 for d in query.blobs if self.name in d})

    about = StoreInfo("/run/containerd/containerd.sock", "1.7.13", "stand-in")

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        self.busy.append(self.name)
        assert len(self.busy) <= self.limit  # never more nodes pushed to at once than --parallel
        await asyncio.sleep(0.01)
        self.busy.remove(self.name)
        return Delivery()


def run(
    names: list[str], *, parallel: int, unreachable: set[str] = frozenset(), silent: set[str] = frozenset()
) -> tuple[list[Holding | None], list[NodeResult]]:
    """One image whose source asks every node (named x, y, z) which of three blobs it holds."""
    answers: list[Holding | None] = []
    busy: list[str] = []

    async def prepare(listener: object, nodes: NodesView) -> PreparedImage:
        answers.extend(await nodes.ask(HoldingQuery(blobs=("has-x", "has-y-z", "has-z"))))
        return PreparedImage(Any, OPTIONS)  # type: ignore[arg-type]  # never read

    @contextlib.asynccontextmanager
    async def open_store(transport: Any, node: NodeSpec, progress: ProgressSink) -> AsyncIterator[Target]:
        yield Target(transport.name, transport.name not in silent, busy, parallel)

    image = ImageJob("app", prepare, asks_nodes=True)  # type: ignore[arg-type]
    jobs = [NodeJob(NodeSpec(n), Transport(n, n not in unreachable)) for n in names]  # type: ignore[arg-type]
    pushing = push_all([image], jobs, open_store, NullProgress(), parallel=parallel)
    results = asyncio.run(asyncio.wait_for(pushing, timeout=10))
    return answers, results


@pytest.mark.parametrize("parallel", [1, 2, 8])
def test_every_node_answers_whatever_the_parallelism(parallel: int) -> None:
    answers, results = run(["x", "y", "z"], parallel=parallel)
    assert [sorted(a.blobs) if a else None for a in answers] == [["has-x"], ["has-y-z"], ["has-y-z", "has-z"]]
    assert all(r.ok for r in results), [r.error for r in results]


def test_a_node_that_cannot_be_reached_or_cannot_say_counts_as_holding_nothing() -> None:
    answers, results = run(["x", "y", "z"], parallel=1, unreachable={"y"}, silent={"z"})
    assert len(answers) == 3
    assert answers[0] is not None and answers[1] is None and answers[2] is None
    assert [r.ok for r in results] == [True, False, True]  # z could not say, but takes its push
