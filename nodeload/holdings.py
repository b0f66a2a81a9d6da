"""What the nodes of a run hold, as far as a source needs to know it before it prepares an image.

Most sources prepare an image the same way whatever the nodes hold. One does not: the Docker
engine's own ``docker push`` sends only the layers its registry lacks, so the engine is told
which of its layers every node holds already (and a node holding a layer under a digest the
engine would not send makes ``docker save`` the better export). Such a source asks the run's
nodes one :class:`HoldingQuery`; each node answers once it is connected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from nodeload.image import Descriptor


@dataclass(frozen=True)
class HoldingQuery:
    """What a source asks each node.

    Attributes:
        blobs: Digests: which does the node hold (with their sizes)?
        layers: Layers by uncompressed digest: under which blob does the node hold each?
        image: ``(name, config digest)``: does the node hold that image as it is, complete (with
            ``layers`` as its layers; unpacked into ``snapshotter`` unless ``unpacked`` is False)?
        unpacked: Whether the image must be unpacked to count as complete.
        snapshotter: Where it must be unpacked (None: where CRI unpacks, else overlayfs).
    """

    blobs: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    image: tuple[str, str] | None = None
    unpacked: bool = True
    snapshotter: str | None = None


@dataclass(frozen=True)
class Holding:
    """One node's answer to a :class:`HoldingQuery`.

    Attributes:
        blobs: The digests asked about that the node holds, with their sizes.
        layers: For each layer asked about that the node holds, the digest it holds it under
            (compressed or not).
        complete: When the node holds the image asked about as it is (named, complete,
            unpacked, known to CRI): its manifest and that manifest's documents (the manifest
            and its config, by digest).
    """

    blobs: Mapping[str, int] = field(default_factory=dict)
    layers: Mapping[str, str] = field(default_factory=dict)
    complete: tuple[Descriptor, Mapping[str, bytes]] | None = None


class NodesView(Protocol):
    """The nodes of a run, as a source preparing an image may ask them."""

    async def ask(self, query: HoldingQuery) -> list[Holding | None]:
        """Every node's answer, once each has given it; None for a node that cannot say
        (unreachable, or written some way that does not answer): count it as holding nothing.
        An empty list: the run has no node that could answer."""
        ...
