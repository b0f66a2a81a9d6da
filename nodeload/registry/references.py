"""What a pushed manifest names, checked on the nodes before any node is given it.

A manifest names its config and layers; an index names manifests, which may be indexes in
turn. The distribution spec has clients push what a manifest names before the manifest, so
each of them must be on the nodes, with the size the manifest says; the manifests and
configs among them are read, once each and from one node (content is addressed by digest:
every node holds the same bytes), for the nodes to be given the image. What is wrong with
the documents is the client's error (400); a node that cannot answer, or that lacks a blob
because its upload failed there, fails alone.

The walk is bounded (see :class:`~nodeload.registry.limits.Limits`): a few kilobytes of
index could otherwise name the same documents hundreds of thousands of times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from nodeload.containerd.client import rpc_error
from nodeload.errors import NodeloadError, SourceError
from nodeload.image import Descriptor
from nodeload.jsondoc import Doc, parse
from nodeload.registry.errors import invalid
from nodeload.registry.limits import Limits

if TYPE_CHECKING:
    from nodeload.registry.store import ServedNode

_PARALLEL = 16  # descriptors looked up at once (each: one call per node)
# Layers a registry is not given (Windows base layers, pulled from their URLs by whoever runs them).
_NOT_PUSHED = ("foreign", "nondistributable")


@dataclass
class Referenced:
    """What a manifest names: the documents read, and the nodes that cannot take it."""

    documents: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes, the root included
    failed: dict[str, str] = field(default_factory=dict)  # node -> why


async def check_references(
    sessions: Sequence[ServedNode], root: Descriptor, body: bytes, doc: Doc, limits: Limits
) -> Referenced:
    """Check everything ``doc`` (the pushed manifest, ``body``) names, through nested indexes.

    Raises:
        RegistryError: 400 when the manifest is at fault: MANIFEST_INVALID (a malformed
            document, too many descriptors, too deep, too large), MANIFEST_BLOB_UNKNOWN (a blob
            the nodes do not hold), SIZE_INVALID (a descriptor's size is not the blob's).
    """
    walk = _Walk(sessions, limits)
    await walk.run(root, body, doc)
    return walk.found


class _Walk:
    """One walk, level by level from the pushed manifest, each digest checked once."""

    def __init__(self, sessions: Sequence[ServedNode], limits: Limits) -> None:
        self._sessions, self._limits = sessions, limits
        self.found = Referenced()
        self._seen: set[str] = set()
        self._named = 0  # descriptors met, repeats included
        self._bytes = 0
        self._gate = asyncio.Semaphore(_PARALLEL)

    async def run(self, root: Descriptor, body: bytes, doc: Doc) -> None:
        self.found.documents[root.digest] = body
        self._seen.add(root.digest)
        level, depth = [doc], 1
        while level:
            named = [pair for d in level for pair in self._named_by(d, layers=depth == 1)]
            new = {desc.digest: (desc, kind) for desc, kind in named if desc.digest not in self._seen}
            self._seen.update(new)
            if depth >= self._limits.nesting and any(kind == "manifest" for _, kind in new.values()):
                raise invalid(
                    "MANIFEST_INVALID",
                    f"{root.digest}: indexes nested too deeply (at most {self._limits.nesting - 1} "
                    "levels of index above a manifest)",
                )
            checked = await asyncio.gather(*(self._check(desc, kind) for desc, kind in new.values()))
            level = [child for child in checked if child is not None]
            depth += 1

    def _named_by(self, doc: Doc, *, layers: bool) -> list[tuple[Descriptor, str]]:
        """The descriptors ``doc`` names: manifests (an index's), config, and layers if asked."""
        try:
            named = [(Descriptor.from_json(m), "manifest") for m in doc.objs("manifests")]
            config = doc.opt_obj("config")
            if config is not None:
                named.append((Descriptor.from_json(config), "config"))
            if layers:
                found = (Descriptor.from_json(layer) for layer in doc.objs("layers"))
                named += [(desc, "layer") for desc in found if not _not_pushed(desc)]
        except SourceError as err:
            raise invalid("MANIFEST_INVALID", str(err)) from err
        self._named += len(named)
        if self._named > self._limits.references:
            raise invalid(
                "MANIFEST_INVALID",
                f"the manifest names more than {self._limits.references} manifests, configs and layers "
                "(through its nested indexes, repeats counted)",
            )
        return named

    async def _check(self, desc: Descriptor, kind: str) -> Doc | None:
        """Check that the nodes hold ``desc``; read it if it is a document; parse it if a manifest."""
        async with self._gate:
            holders = await self._holders(desc)
            if kind == "layer" or not holders:
                return None
            data = await self._read(desc, holders)
        if data is None or kind != "manifest":
            return None
        try:
            return parse(data, desc.digest)
        except SourceError as err:
            raise invalid("MANIFEST_INVALID", str(err)) from err

    async def _holders(self, desc: Descriptor) -> list[ServedNode]:
        """The nodes that hold ``desc`` (with the size the manifest says); the others fail."""
        live = [s for s in self._sessions if s.name not in self.found.failed]
        sizes = await asyncio.gather(*(self._size(s, desc.digest) for s in live))
        answered = [(s, size) for s, size in zip(live, sizes, strict=True) if s.name not in self.found.failed]
        holders = [(s, size) for s, size in answered if size is not None]
        lacking = [s for s, size in answered if size is None]
        # A node lacks a blob it was sent only if receiving it failed there (and that is recorded):
        # one that took every upload lacks it because the client never sent it.
        if any(not s.errors for s in lacking):
            raise invalid(
                "MANIFEST_BLOB_UNKNOWN",
                f"{desc.digest} is not on every node: push it before the manifest",
                digest=desc.digest,
            )
        for session in lacking:
            self.found.failed[session.name] = f"it lacks {desc.digest}, whose upload failed there"
        if holders and holders[0][1] != desc.size:
            raise invalid(
                "SIZE_INVALID",
                f"{desc.digest} is {holders[0][1]} bytes, the manifest says {desc.size}",
                digest=desc.digest,
            )
        return [s for s, _ in holders]

    async def _size(self, session: ServedNode, digest: str) -> int | None:
        try:
            info = await session.client.content_info(digest)
        except grpc.aio.AioRpcError as err:
            self.found.failed[session.name] = str(rpc_error(f"looking up {digest}", err))
            return None
        except NodeloadError as err:
            self.found.failed[session.name] = f"looking up {digest}: {err}"
            return None
        return None if info is None else int(info.size)

    async def _read(self, desc: Descriptor, holders: Sequence[ServedNode]) -> bytes | None:
        """The document from the first node that can send it (None: none could)."""
        for session in holders:
            try:
                data = await session.client.read_document(desc.digest)
            except SourceError as err:  # larger than any document may be
                raise invalid("MANIFEST_INVALID", str(err)) from err
            except NodeloadError as err:
                self.found.failed[session.name] = f"reading {desc.digest}: {err}"
                continue
            self._bytes += len(data)
            if self._bytes > self._limits.document_bytes:
                raise invalid(
                    "MANIFEST_INVALID",
                    f"the documents the manifest names exceed {self._limits.document_bytes >> 20} MiB",
                )
            self.found.documents[desc.digest] = data
            return data
        return None


def _not_pushed(desc: Descriptor) -> bool:
    return any(word in desc.media_type for word in _NOT_PUSHED)
