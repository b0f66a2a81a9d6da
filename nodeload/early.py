"""Layers of an image still being prepared, handed to the nodes as each one is ready.

A cold push from the Docker engine spends seconds exporting and compressing before the
image's manifest exists; the layers finished first can be on their way meanwhile. The
source announces, from the preparing thread, which layers the image has (its diffIDs, known
from ``docker inspect`` before the export starts) and then each layer as soon as it is
compressed; each node follows the announcements on the event loop and sends what it lacks.
The manifest, config and unpacking still wait for the whole image, as ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Protocol

from nodeload.image import Descriptor


@dataclass(frozen=True)
class ReadyLayer:
    """A layer that can be streamed now, described as the image's manifest will describe it."""

    desc: Descriptor
    diff_id: str
    open: Callable[[int], AbstractContextManager[IO[bytes]]]  # offset -> stream


class LayerListener(Protocol):
    """What a source tells while it prepares an image (called from its thread)."""

    def expect(self, diff_ids: Sequence[str]) -> None:
        """The image's layers, by uncompressed digest, before any is ready."""
        ...

    def ready(self, layer: ReadyLayer) -> None:
        """One layer can be streamed now."""
        ...


class EarlyLayers:
    """The announcements of one image, from the preparing thread to any number of followers.

    Create it on the event loop; :meth:`expect`, :meth:`ready` and :meth:`close` may be called
    from any thread.
    """

    def __init__(self) -> None:
        """Bind to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.diff_ids: tuple[str, ...] | None = None
        self._layers: list[ReadyLayer] = []
        self._closed = False
        self._changed = asyncio.Event()

    def expect(self, diff_ids: Sequence[str]) -> None:
        """See :class:`LayerListener`."""
        self._call(self._set_expected, tuple(diff_ids))

    def ready(self, layer: ReadyLayer) -> None:
        """See :class:`LayerListener`."""
        self._call(self._layers.append, layer)

    def close(self) -> None:
        """No more announcements: the image is prepared (or failed)."""
        self._call(self._set_closed)

    def _call(self, change: Callable[..., object], *args: object) -> None:
        def apply() -> None:
            change(*args)
            woken, self._changed = self._changed, asyncio.Event()
            woken.set()

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody follows any more
            self._loop.call_soon_threadsafe(apply)

    async def expected(self) -> tuple[str, ...] | None:
        """The announced diffIDs, once known; None when preparing ended without any."""
        while self.diff_ids is None and not self._closed:
            await self._changed.wait()
        return self.diff_ids

    async def follow(self) -> AsyncIterator[ReadyLayer]:
        """Every layer announced, in order, until preparing ends."""
        seen = 0
        while True:
            while seen < len(self._layers):
                seen += 1
                yield self._layers[seen - 1]
            if self._closed:
                return
            await self._changed.wait()

    def _set_expected(self, diff_ids: tuple[str, ...]) -> None:
        self.diff_ids = diff_ids

    def _set_closed(self) -> None:
        self._closed = True
