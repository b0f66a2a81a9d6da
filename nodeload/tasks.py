"""Coroutines run together, whose failure is raised as the error it is.

``asyncio.TaskGroup`` wraps whatever its tasks raise in an ``ExceptionGroup``; the push paths
decide what to do by the error's type (a lost session is retried and resumed, a refusal is
told in the user's words), so an error from a task of a push must reach them as itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def first_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of ``errors`` (of its first nested group, if need be): the one that
    stopped the others, as task groups list them in the order they happened."""
    first = errors.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` (the first failure cancels the rest) that raises that failure
    as itself rather than in an ``ExceptionGroup``."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None


async def together(*coroutines: Coroutine[Any, Any, T]) -> list[T]:
    """Run ``coroutines`` at once; their results in order. The first to fail cancels the others
    and its error is raised (``asyncio.gather`` would leave them running)."""
    async with task_group() as group:
        tasks = [group.create_task(coroutine) for coroutine in coroutines]
    return [task.result() for task in tasks]


async def in_thread(work: Callable[[], T]) -> T:
    """Run the blocking ``work`` in a thread of its own; its result or its error.

    A daemon thread, so that Ctrl-C is not held up by it (a ``docker save``, a ``docker push``:
    asyncio's default executor would be joined at exit). Cancelling the wait leaves the thread
    to finish on its own: whatever it writes must be safe to abandon midway.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: T | BaseException, failed: bool) -> None:
        if future.done():
            return
        if failed:
            assert isinstance(outcome, BaseException)
            future.set_exception(outcome)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: T | BaseException = work()
            failed = False
        except BaseException as err:  # handed over to the awaiting coroutine
            outcome, failed = err, True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome, failed)

    threading.Thread(target=run, name="nodeload-work", daemon=True).start()
    return await future
