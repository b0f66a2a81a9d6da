"""Docker-engine images delivered by the engine's own ``docker push`` into a local endpoint.

Docker's classic image store can only export a whole image (``docker save``), but ``docker
push`` hands out just the layers a registry lacks, asking first with a HEAD per layer, and
remembers which compressed digest it pushed to which registry host. So the engine pushes into
an endpoint on a stable loopback address whose storage (:mod:`nodeload.registry.spool`) says a
layer is there when every node of the run holds it already: a changed image costs one HEAD per
unchanged layer and the upload of the changed ones, with no export at all. Each upload, once
complete, goes on to the nodes that lack it as an early layer (:mod:`nodeload.early`), while
the engine uploads the next; the manifest and config come last. From there the image is pushed
like any other source's: a plan per node, resume inside an interrupted blob, retries, the
naming rules, the same report.

The engine compresses with its own gzip, so its layer digests differ from those of nodeload's
``docker save`` path or of ``ctr import``. With ``--export auto`` this path is taken only when
it sends nothing a node already holds: no node may hold one of the image's layers under a
digest other than the one the engine pushed before (nodeload records those, by uncompressed
digest). When every node holds the image exactly as the engine has it, the engine is not even
asked (``export: none``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from nodeload.early import LayerListener, ReadyLayer
from nodeload.errors import NodeloadError, SourceError
from nodeload.holdings import Holding, HoldingQuery
from nodeload.image import Descriptor, descriptor_for
from nodeload.jsondoc import parse
from nodeload.reference import parse_reference
from nodeload.registry.protocol import Credentials, build_app, listen, loopback
from nodeload.registry.spool import SpoolStore
from nodeload.sources.base import Closeable, Source
from nodeload.sources.docker_daemon import own_name
from nodeload.sources.layer_cache import LayerCache
from nodeload.sources.naming import name_on_nodes
from nodeload.tasks import in_thread

# Docker remembers what it pushed per registry host: the endpoint keeps one address across runs.
ENDPOINT = "127.0.0.1:5751"
_UPLOADED = "application/octet-stream"  # what an upload is, until the manifest says


class EngineCannotPush(SourceError):
    """The engine cannot push into nodeload's endpoint (remote, rootless, or its push failed)."""


@dataclasses.dataclass(frozen=True)
class EngineImage:
    """A Docker-engine image: how the user wrote it, and the name to create on the nodes."""

    label: str  # the IMAGE argument
    ref: str  # what the engine calls it (name or image ID)
    name: str  # normalized name on the nodes (docker.io/library/app:dev)
    name_from_source: bool
    diff_ids: tuple[str, ...]  # its layers, uncompressed (the engine's RootFS)
    image_id: str  # the engine's image ID: its config's digest


@dataclasses.dataclass(frozen=True)
class EnginePush:
    """The outcome of :func:`push_from_engine`: the image and how it left the engine."""

    source: Source
    export: str  # "docker-push", or "none" when every node held it already


def inspect(
    client: docker.DockerClient, text: str, ref: str, explicit_name: str | None
) -> EngineImage | None:
    """The engine image ``ref`` (the IMAGE argument ``text``); None when the engine has none such
    (the ``docker save`` path says so clearly) or its name is digest-pinned (not pushable by tag)."""
    try:
        info: dict[str, Any] = client.api.inspect_image(ref)
    except docker.errors.DockerException:
        return None
    name, from_source = name_on_nodes(explicit_name, text, own_name(ref, info))
    if parse_reference(name).digest:
        return None
    diff_ids = tuple(str(d) for d in (info.get("RootFS") or {}).get("Layers") or [])
    return EngineImage(text, ref, name, from_source, diff_ids, str(info.get("Id") or ""))


def unreachable_loopback(client: docker.DockerClient, known: set[str]) -> str | None:
    """Why this engine cannot push to our 127.0.0.1 endpoint, or None when it can.

    A remote engine (DOCKER_HOST=ssh://, tcp://) has another loopback; a rootless one runs in
    a network namespace of its own. ``known``: the API addresses of engines known to reach it
    (asking costs a ``docker info``); one that does is added.
    """
    base = str(getattr(client.api, "base_url", ""))
    if not base.startswith(("http+docker://localhost", "http+docker://localunixsocket")):
        return f"the Docker engine is remote ({base})"
    if base in known:  # a persistent session asks once
        return None
    try:
        security = client.api.info().get("SecurityOptions") or []
    except docker.errors.DockerException as err:
        return f"the Docker engine did not answer ({err})"
    if any("rootless" in str(option) for option in security):
        return "the Docker engine is rootless (its 127.0.0.1 is not this machine's)"
    known.add(base)
    return None


def query_for(
    image: EngineImage, cache: LayerCache, *, unpacked: bool, snapshotter: str | None
) -> HoldingQuery:
    """What the nodes are asked before the engine pushes ``image``: which of the layers the engine
    pushed before they hold, under which digest they hold each layer, and whether they hold the
    whole image already."""
    pushed = _PushedLayers(cache)
    known = [d for d in (pushed.digest(diff_id) for diff_id in image.diff_ids) if d]
    return HoldingQuery(
        blobs=tuple(dict.fromkeys(known)),
        layers=image.diff_ids,
        image=(image.name, image.image_id) if image.image_id else None,
        unpacked=unpacked,
        snapshotter=snapshotter,
    )


def resent_layer(image: EngineImage, cache: LayerCache, answers: Sequence[Holding | None]) -> str | None:
    """Why ``docker push`` would send a layer some node holds already (under another digest than
    the engine pushed before: compressed by nodeload's own ``docker save`` path, or raw from
    ``ctr import``), or None."""
    pushed = _PushedLayers(cache)
    for answer in answers:
        if answer is None:
            continue
        for diff_id in image.diff_ids:
            engine_digest = pushed.digest(diff_id)
            if engine_digest is not None and engine_digest in answer.blobs:
                continue  # the engine's HEAD finds it there
            held = answer.layers.get(diff_id)
            if held is not None and held != engine_digest:
                return f"a node holds layer {diff_id[:19]} as {held[:19]}, which docker push would send again"
    return None


def held_by_all(query: HoldingQuery, answers: Sequence[Holding | None]) -> dict[str, int]:
    """The blobs of ``query`` every node holds (nothing, when a node could not say)."""
    known = [a for a in answers if a is not None]
    if not known or len(known) < len(answers):
        return {}
    return {d: known[0].blobs[d] for d in query.blobs if all(d in a.blobs for a in known)}


def held_everywhere(image: EngineImage, answers: Sequence[Holding | None]) -> EnginePush | None:
    """The image as the nodes hold it, when every node holds it as the engine has it, complete,
    under the same manifest: then there is nothing for the engine to push (``export: none``)."""
    found = [a.complete if a is not None else None for a in answers]
    first = found[0] if found else None
    if first is None or any(f is None or f[0].digest != first[0].digest for f in found):
        return None
    root, documents = first
    return EnginePush(_Pushed(image.name, root, dict(documents), None), "none")


async def push_from_engine(
    client: docker.DockerClient,
    image: EngineImage,
    listener: LayerListener,
    stack: contextlib.ExitStack,
    *,
    cache: LayerCache,
    query: HoldingQuery,
    answers: Sequence[Holding | None],
) -> EnginePush:
    """Have the engine push ``image`` into a local endpoint; the image as it arrived.

    ``answers`` are the nodes' to ``query``: the endpoint says a layer is there when every node
    holds it. Each upload goes to ``listener`` once complete. The endpoint closes once the engine
    is done; the spool stays until ``stack`` closes (a retry may need it).

    Raises:
        EngineCannotPush: the engine's push failed.
    """
    listener.expect(image.diff_ids)

    def announce(digest: str, size: int, path: Path) -> None:
        listener.ready(ReadyLayer(Descriptor(_UPLOADED, digest, size), "", _opener(path)))

    store = SpoolStore(held_by_all(query, answers), announce)
    stack.callback(store.close)
    credentials = Credentials.generate()
    async with contextlib.AsyncExitStack() as endpoint:
        host, port = loopback(ENDPOINT)
        address = await listen(endpoint, build_app(store, credentials), host, port, fallback=True)
        reference = parse_reference(image.name)
        repository = f"{address}/{reference.domain}/{reference.path}"
        tag = reference.tag or "latest"
        await in_thread(lambda: _tag(client, image.ref, repository, tag))
        try:
            await in_thread(lambda: _engine_push(client, repository, tag, credentials))
        finally:  # here, not in the thread: interrupted, the thread is left to end on its own
            _untag(client, repository, tag)
    entry = store.manifests.get(tag)
    if entry is None:
        raise EngineCannotPush(f"docker push of {image.label} ended without a manifest")
    media_type, body = entry
    root = descriptor_for(media_type, body)
    _record_pushed(cache, body, store)
    return EnginePush(_Pushed(image.name, root, {root.digest: body}, store), "docker-push")


def _opener(path: Path) -> Callable[[int], AbstractContextManager[IO[bytes]]]:
    def open_at(offset: int) -> AbstractContextManager[IO[bytes]]:
        stream = path.open("rb")
        stream.seek(offset)
        return stream

    return open_at


def _tag(client: docker.DockerClient, ref: str, repository: str, tag: str) -> None:
    """Name the image for the endpoint (a temporary tag: :func:`_untag` removes it)."""
    try:
        client.api.tag(ref, repository, tag)
    except docker.errors.DockerException as err:
        raise SourceError(f"Docker could not tag {ref!r} for the push: {err}") from err


def _engine_push(client: docker.DockerClient, repository: str, tag: str, credentials: Credentials) -> None:
    """Push through the Engine API, authenticated with the run's credentials."""
    auth = {"username": credentials.username, "password": credentials.password}
    try:
        for event in client.api.push(repository, tag, auth_config=auth, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise EngineCannotPush(f"docker push into nodeload's endpoint failed: {event['error']}")
    except docker.errors.DockerException as err:
        raise EngineCannotPush(f"docker push into nodeload's endpoint failed: {err}") from err


def _untag(client: docker.DockerClient, repository: str, tag: str) -> None:
    with contextlib.suppress(docker.errors.DockerException):
        client.api.remove_image(f"{repository}:{tag}", noprune=True)  # only our temporary tag


class _Pushed(Closeable):
    """An ImageSource of what the engine pushed: the manifest it put, its uploads (in the
    spool), and nothing else: a blob it did not upload was on every node when it asked."""

    def __init__(
        self, name: str, root: Descriptor, documents: dict[str, bytes], spool: SpoolStore | None
    ) -> None:
        self._name, self._root, self._documents, self._spool = name, root, documents, spool

    @property
    def reference(self) -> str | None:
        return self._name

    @property
    def root(self) -> Descriptor:
        return self._root

    @property
    def rewritable(self) -> bool:
        return False  # the engine's manifest, as it pushed it

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        data = self._documents.get(desc.digest)
        if data is not None:
            return contextlib.nullcontext(io.BytesIO(data[offset:]))
        path = self._spool.blob_path(desc.digest) if self._spool is not None else None
        if path is None:
            raise SourceError(
                f"{desc.digest} did not come from the engine: every node held it when docker push "
                "asked, and this one lost it since (garbage collection?); run the push again"
            )
        return _opener(path)(offset)

    def refresh(self, desc: Descriptor) -> bool:
        return False


class _PushedLayers:
    """The compressed digest the engine pushed into the endpoint for each layer (by diffID)."""

    def __init__(self, cache: LayerCache) -> None:
        self._dir = cache.root / "engine-pushed"
        self._cache = cache

    def digest(self, diff_id: str) -> str | None:
        try:
            return (self._dir / diff_id.removeprefix("sha256:")).read_text().strip() or None
        except OSError:
            return None

    def record(self, diff_ids: Sequence[str], digests: Sequence[str]) -> None:
        with contextlib.suppress(NodeloadError, OSError):
            self._cache.ensure_dir(self._dir)
            for diff_id, digest in zip(diff_ids, digests, strict=False):
                (self._dir / diff_id.removeprefix("sha256:")).write_text(digest)


def _record_pushed(cache: LayerCache, manifest: bytes, store: SpoolStore) -> None:
    """Remember which digests the engine used, from the manifest it pushed and its config."""
    with contextlib.suppress(NodeloadError, KeyError, ValueError, TypeError, OSError):
        doc = parse(manifest, "pushed manifest")
        config = Descriptor.from_json(doc.obj("config"))
        path = store.blob_path(config.digest)
        if path is None:
            return
        rootfs = parse(path.read_bytes(), "pushed config").obj("rootfs")
        digests = [Descriptor.from_json(layer).digest for layer in doc.objs("layers")]
        _PushedLayers(cache).record(rootfs.texts("diff_ids"), digests)
