"""Docker-engine images pushed by the engine itself (``docker push``) into nodeload's endpoint.

Docker's classic image store can only export a whole image (``docker save``), but ``docker
push`` hands out just the layers a registry lacks, asking first with a HEAD per layer, and
remembers which compressed digest it pushed to which registry host. Pushing into
``nodeload serve``'s endpoint on a stable loopback address therefore makes a changed image
cost one HEAD per unchanged layer plus the changed layer, with no export at all.

The engine compresses with its own gzip, so its layer digests differ from those of
nodeload's ``docker save`` path or of ``ctr import``. This path is taken only when it sends
nothing a node already holds: no node may hold one of the image's layers under a digest other
than the one the engine pushed before (nodeload records those, by uncompressed digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import docker
import docker.errors

from nodeload.errors import NodeloadError, SourceError
from nodeload.image import Descriptor
from nodeload.jsondoc import parse
from nodeload.nodes.spec import NodeSpec
from nodeload.progress import ProgressSink
from nodeload.reference import parse_reference
from nodeload.registry.server import Endpoint, ServeOptions, open_endpoint
from nodeload.registry.store import NodeSession
from nodeload.report import NodeResult
from nodeload.session import Session
from nodeload.sources.layer_cache import LayerCache
from nodeload.targets.base import TargetOptions

# Docker remembers what it pushed per registry host: the endpoint keeps one address across runs.
ENDPOINT = "127.0.0.1:5751"


class EngineCannotPush(NodeloadError):
    """This engine cannot push into a loopback endpoint (remote or rootless), or a node cannot be served."""


@dataclasses.dataclass(frozen=True)
class EngineImage:
    """A Docker-engine image to push: how the user wrote it, and the name to create on the nodes."""

    label: str  # the IMAGE argument
    ref: str  # what the engine calls it (name or image ID)
    name: str  # normalized name on the nodes (docker.io/library/app:dev)
    name_from_source: bool
    diff_ids: tuple[str, ...] = ()  # its layers, uncompressed (the engine's RootFS)
    image_id: str = ""  # the engine's image ID: its config's digest


# Engines known to push to our loopback endpoint (by API address): asking costs a `docker info`.
_REACHES_LOOPBACK: set[str] = set()


def engine_can_reach_loopback(client: docker.DockerClient) -> str | None:
    """Why this engine cannot push to our 127.0.0.1 endpoint, or None when it can.

    A remote engine (DOCKER_HOST=ssh://, tcp://) has another loopback; a rootless one runs in
    a network namespace of its own.
    """
    base = str(getattr(client.api, "base_url", ""))
    if not base.startswith(("http+docker://localhost", "http+docker://localunixsocket")):
        return f"the Docker engine is remote ({base})"
    if base in _REACHES_LOOPBACK:  # a persistent session asks once
        return None
    try:
        security = client.api.info().get("SecurityOptions") or []
    except docker.errors.DockerException as err:
        return f"the Docker engine did not answer ({err})"
    if any("rootless" in str(option) for option in security):
        return "the Docker engine is rootless (its 127.0.0.1 is not this machine's)"
    _REACHES_LOOPBACK.add(base)
    return None


async def push_with_engine(
    client: docker.DockerClient,
    images: Sequence[EngineImage],
    nodes: Sequence[NodeSpec],
    options: ServeOptions,
    progress: ProgressSink,
    session: Session | None = None,
) -> list[NodeResult]:
    """``docker push`` each image into an endpoint over the nodes; one result per (image, node).

    Raises:
        EngineCannotPush: a node cannot be served (the caller falls back to ``docker save``).
    """
    serve_options = dataclasses.replace(options, listen=ENDPOINT, fallback_port=True)
    try:
        opened = open_endpoint(nodes, serve_options, progress, require_all=True, session=session)
        async with opened as endpoint:
            held = [await _unchanged(endpoint, image) for image in images]
            changed = [image for image, found in zip(images, held, strict=True) if found is None]
            await _check_no_twins(endpoint, changed)
            results: list[NodeResult] = []
            for image, found in zip(images, held, strict=True):
                results += found if found is not None else await _push_one(client, endpoint, image, progress)
            return results
    except NodeloadError as err:
        if isinstance(err, EngineCannotPush | SourceError):
            raise
        raise EngineCannotPush(str(err)) from err


async def _unchanged(endpoint: Endpoint, image: EngineImage) -> list[NodeResult] | None:
    """Each node's result when every node holds ``image`` as the engine has it, complete (then
    there is nothing for the engine to push: ``export`` is ``none``); None otherwise."""
    if not image.image_id:
        return None
    started = asyncio.get_running_loop().time()
    before = {s.name: _traffic(s) for s in endpoint.sessions}
    results = [NodeResult(node=s.name, image=image.label, export="none") for s in endpoint.sessions]
    found = await asyncio.gather(
        *(
            session.target.holds(
                TargetOptions(namespace=session.client.namespace, name=image.name),
                image.image_id,
                image.diff_ids,
                result,
            )
            for session, result in zip(endpoint.sessions, results, strict=True)
        )
    )
    if not all(found):
        return None
    seconds = round(asyncio.get_running_loop().time() - started, 3)
    for session, result in zip(endpoint.sessions, results, strict=True):
        result.seconds = seconds
        _count_wire(result, session, before[session.name])
    return results


async def _check_no_twins(endpoint: Endpoint, images: Sequence[EngineImage]) -> None:
    """Refuse (EngineCannotPush) when a node holds a layer under a digest the engine would not push.

    Such a layer would be sent again, compressed by the engine; the save path reuses it. A
    node that holds the digest the engine pushed before is asked nothing more: the engine's
    HEAD finds it there.
    """
    known = _PushedLayers(LayerCache())
    layers = sorted({diff_id for image in images for diff_id in image.diff_ids})
    pushed = {diff_id: known.digest(diff_id) for diff_id in layers}

    async def twin_of(session: NodeSession, diff_id: str) -> Descriptor | None:
        digest = pushed[diff_id]
        if digest is not None and await session.client.content_info(digest) is not None:
            return None
        return await session.target.equivalent_blob(diff_id)

    for session in endpoint.sessions:
        twins = await asyncio.gather(*(twin_of(session, diff_id) for diff_id in layers))
        for diff_id, twin in zip(layers, twins, strict=True):
            if twin is not None and twin.digest != pushed[diff_id]:
                raise EngineCannotPush(
                    f"{session.name} holds layer {diff_id[:19]} as {twin.digest[:19]}, which docker push "
                    "would send again"
                )


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


def _record_pushed(endpoint: Endpoint, image: EngineImage) -> None:
    """Remember which digests the engine used, from the manifest it pushed and its config."""
    received = endpoint.store.received.get(image.name)
    if received is None:
        return
    root, documents = received
    with contextlib.suppress(NodeloadError, KeyError, ValueError, TypeError):
        doc = parse(documents[root.digest], "pushed manifest")
        config = Descriptor.from_json(doc.obj("config"))
        rootfs = parse(documents[config.digest], "pushed config").obj("rootfs")
        digests = [Descriptor.from_json(layer).digest for layer in doc.objs("layers")]
        _PushedLayers(LayerCache()).record(rootfs.texts("diff_ids"), digests)


async def _push_one(
    client: docker.DockerClient, endpoint: Endpoint, image: EngineImage, progress: ProgressSink
) -> list[NodeResult]:
    endpoint.store.name_from_source = image.name_from_source
    started = asyncio.get_running_loop().time()
    before = {
        s.name: (len(s.results), s.bytes_received, s.blobs_received, _traffic(s)) for s in endpoint.sessions
    }
    for session in endpoint.sessions:
        progress.message(session.name, f"docker push of {image.label}")
    reference = parse_reference(image.name)
    repository = f"{endpoint.address}/{reference.domain}/{reference.path}"
    await asyncio.to_thread(_engine_push, client, image.ref, repository, reference.tag or "latest", endpoint)
    _record_pushed(endpoint, image)
    seconds = round(asyncio.get_running_loop().time() - started, 3)
    results = [_result(session, image, *before[session.name]) for session in endpoint.sessions]
    for result in results:
        result.seconds = seconds
    return results


def _engine_push(
    client: docker.DockerClient, ref: str, repository: str, tag: str, endpoint: Endpoint
) -> None:
    """Tag, push through the Engine API (authenticated with the run's credentials), untag."""
    api = client.api
    credentials = {"username": endpoint.credentials.username, "password": endpoint.credentials.password}
    try:
        api.tag(ref, repository, tag)
    except docker.errors.DockerException as err:
        raise SourceError(f"Docker could not tag {ref!r} for the push: {err}") from err
    try:
        for event in api.push(repository, tag, auth_config=credentials, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise EngineCannotPush(f"docker push into nodeload's endpoint failed: {event['error']}")
    except docker.errors.DockerException as err:
        raise EngineCannotPush(f"docker push into nodeload's endpoint failed: {err}") from err
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            api.remove_image(f"{repository}:{tag}", noprune=True)  # only our temporary tag


def _traffic(session: NodeSession) -> tuple[int, int]:
    traffic = session.transport.traffic() if session.transport is not None else None
    return (traffic.sent, traffic.received) if traffic else (-1, -1)


def _result(
    session: NodeSession,
    image: EngineImage,
    results_before: int,
    bytes_before: int,
    blobs_before: int,
    traffic_before: tuple[int, int],
) -> NodeResult:
    """The node's result for this image: the manifest push's, plus the layers uploaded for it."""
    mine = [r for r in session.results[results_before:] if r.name == image.name]
    result = mine[-1] if mine else NodeResult(node=session.name, name=image.name)
    result.image = image.label
    if not mine:
        result.fail(NodeloadError("; ".join(session.errors) or "the image never reached this node"))
    uploaded = session.bytes_received - bytes_before
    blobs = session.blobs_received - blobs_before
    result.bytes_sent += uploaded
    result.bytes_skipped = max(result.bytes_skipped - uploaded, 0)
    result.blobs_sent += blobs
    result.blobs_skipped = max(result.blobs_skipped - blobs, 0)
    result.export = "docker-push"
    _count_wire(result, session, traffic_before)
    return result


def _count_wire(result: NodeResult, session: NodeSession, before: tuple[int, int]) -> None:
    """What the node's SSH connection carried since ``before`` (nothing known: left unset)."""
    after = _traffic(session)
    if before[0] >= 0 and after[0] >= 0:
        result.wire_bytes_sent = after[0] - before[0]
        result.wire_bytes_received = after[1] - before[1]


def engine_images(
    client: docker.DockerClient, texts: Sequence[str], explicit_name: str | None
) -> list[EngineImage] | None:
    """The IMAGE arguments as engine images, or None when one is not a Docker-engine image."""
    from nodeload.api import target_name
    from nodeload.sources import parse_source
    from nodeload.sources.docker_daemon import own_name

    images = []
    for text in texts:
        spec = parse_source(text)
        if spec.scheme != "docker-daemon" or spec.ref is None:
            return None
        try:
            info: dict[str, Any] = client.api.inspect_image(spec.ref)
        except docker.errors.DockerException:
            return None  # the save path reports a missing image clearly
        name, from_source = target_name(explicit_name, text, own_name(spec.ref, info))
        if parse_reference(name).digest:
            return None  # a digest-pinned name cannot be pushed by tag
        diff_ids = tuple(str(d) for d in (info.get("RootFS") or {}).get("Layers") or [])
        images.append(EngineImage(text, spec.ref, name, from_source, diff_ids, str(info.get("Id") or "")))
    return images
