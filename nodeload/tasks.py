"""Coroutines run together, whose failure is raised as the error it is.

``asyncio.TaskGroup`` wraps whatever its tasks raise in an ``ExceptionGroup``; the push paths
decide what to do by the error's type (a lost session is retried and resumed, a refusal is
told in the user's words), so an error from a task of a push must reach them as itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
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
