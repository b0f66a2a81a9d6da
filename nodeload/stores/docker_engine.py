"""A node's Docker Engine as its image store (``--store docker``): its own API, through the node's transport.

The remote daemon's socket is reached like containerd's (forwarded over SSH, or relayed), and
nodeload speaks the Engine API through it. What the remote already holds is read from its
images' layer lists (chain IDs); the image travels as a ``docker load`` archive holding the
config and only the layers the remote lacks: ``docker load`` reads no layer whose chain it
already has. Layers go as the source stores them (gzip is fine for ``docker load``).

A remote Docker that keeps its images in containerd (the containerd image store) is written
through containerd's ``moby`` namespace instead, with the containerd store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import queue
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import docker
import docker.errors

from nodeload.errors import ContainerdUnavailable, PlatformNotFound, PushFailed
from nodeload.graph import ImageGraph
from nodeload.image import Descriptor, ImageSource
from nodeload.nodes.spec import NodeSpec
from nodeload.plan import chain_ids
from nodeload.platforms import Platform, choose_platform
from nodeload.progress import ProgressSink
from nodeload.stores.base import Delivery, ImageStore, PreparedImage, StoreInfo, WriteOptions, Written
from nodeload.transports.base import Transport
from nodeload.transports.bridge import SocketUnavailable
from nodeload.wording import setting

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
CONTAINERD_STORE_NAMESPACE = "moby"
_BLOCK = 512
_CHUNK = 1 << 20


@asynccontextmanager
async def open_docker_engine(
    transport: Transport,
    node: NodeSpec,
    progress: ProgressSink,
    *,
    socket: str | None = None,
    timeout: float = 60.0,
) -> AsyncIterator[ImageStore]:
    """The node's Docker Engine, through its socket (or its containerd, for the containerd store).

    Raises:
        ContainerdUnavailable: no Docker socket on the node, or no permission.
    """
    progress.message(node.name, "connecting to Docker")
    reasons = []
    for path in [socket] if socket else DOCKER_SOCKETS:
        try:
            endpoint = await transport.open_socket(path)
            break
        except SocketUnavailable as err:
            reasons.append(str(err))
    else:
        raise ContainerdUnavailable(f"no usable Docker socket: {'; '.join(reasons)}")
    url = f"unix://{endpoint.removeprefix('unix:')}"
    try:
        # In a thread: the client talks (version negotiation) while the tunnel runs on this loop.
        client = await asyncio.to_thread(docker.APIClient, base_url=url, version="auto", timeout=int(timeout))
        info: dict[str, Any] = await asyncio.to_thread(client.info)
    except docker.errors.DockerException as err:
        raise ContainerdUnavailable(f"{path} does not answer as a Docker Engine: {err}") from err
    if _uses_containerd_store(info):
        from nodeload.stores.containerd import open_containerd

        node_for_moby = node if node.namespace else _with_namespace(node, CONTAINERD_STORE_NAMESPACE)
        async with open_containerd(transport, node_for_moby, progress, timeout=timeout) as store:
            yield store
        return
    platform = Platform(str(info.get("OSType", "linux")), str(info.get("Architecture", ""))).normalized()
    try:
        version = str(info.get("ServerVersion", ""))
        yield DockerEngineStore(client, node.name, progress, platform, path, transport.reach, version)
    finally:
        client.close()


def _uses_containerd_store(info: dict[str, Any]) -> bool:
    status = info.get("DriverStatus") or []
    return any(pair and "containerd" in str(pair[-1]) and "driver-type" in str(pair[0]) for pair in status)


def _with_namespace(node: NodeSpec, namespace: str) -> NodeSpec:
    return dataclasses.replace(node, namespace=namespace)


class DockerEngineStore:
    """One node's Docker Engine (classic image store), as a destination for images."""

    def __init__(
        self,
        client: docker.APIClient,
        node: str,
        progress: ProgressSink,
        platform: Platform,
        socket: str,
        method: str,
        version: str,
    ) -> None:
        """Wrap an API client connected through the node's transport."""
        self._client, self._node, self._progress = client, node, progress
        self._platform, self._socket, self._method, self._version = platform, socket, method, version

    @property
    def about(self) -> StoreInfo:
        """What the node's Docker Engine says of itself."""
        return StoreInfo(self._socket, f"docker {self._version}", self._method)

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        """Load ``image`` with only the layers the remote lacks."""
        done = Delivery()
        graph = await asyncio.to_thread(image.graph, options.platform or self._platform)
        foreign = choose_platform(self._platform, [graph.platform]) is None
        if options.platform is None and graph.platform.os and foreign:
            raise PlatformNotFound(
                f"the image is for {graph.platform} but the node runs {self._platform}; "
                f"set {setting('platform', graph.platform)} to push it anyway"
            )
        done.platform, done.digest = str(graph.platform), graph.config.desc.digest
        done.image_id = graph.config.desc.digest
        done.blobs_total = len(graph.layers) + 1
        with done.timed("plan"):
            if await asyncio.to_thread(self._tag_if_present, graph.config.desc.digest, options.name):
                done.blobs_skipped = done.blobs_total
                done.bytes_skipped = sum(layer.size for layer in graph.layers) + graph.config.desc.size
                return done  # the engine holds this very image (its ID is the config digest): only named
            have = await asyncio.to_thread(self._present_chains)
        chains = chain_ids(graph.diff_ids)
        keep = max((i + 1 for i, chain in enumerate(chains) if chain in have), default=0)
        missing = list(graph.layers[keep:])
        done.blobs_skipped = keep
        done.bytes_skipped = sum(layer.size for layer in graph.layers[:keep])
        self._progress.message(self._node, f"loading {len(missing)} of {len(graph.layers)} layers")
        with done.timed("write"):
            await self._load(image.source, graph, missing, options.name, written)
        done.layers_unpacked = len(missing)
        return done

    def _tag_if_present(self, image_id: str, name: str) -> bool:
        """Name the image if the engine already holds it; whether it did."""
        try:
            self._client.inspect_image(image_id)
        except docker.errors.NotFound:
            return False
        except docker.errors.DockerException as err:
            raise PushFailed(f"the remote Docker Engine did not answer: {err}") from err
        repository, _, tag = name.rpartition(":")
        try:
            self._client.tag(image_id, repository, tag)
        except docker.errors.DockerException as err:
            raise PushFailed(f"the remote Docker Engine could not tag {name}: {err}") from err
        return True

    def _present_chains(self) -> set[str]:
        """The chain IDs of every layer stack the remote's images are made of."""
        present: set[str] = set()
        try:
            for summary in self._client.images(all=True):
                info = self._client.inspect_image(summary["Id"])
                present.update(chain_ids([str(d) for d in (info.get("RootFS") or {}).get("Layers") or []]))
        except docker.errors.DockerException as err:
            raise PushFailed(f"the remote Docker Engine could not list its images: {err}") from err
        return present

    async def _load(
        self,
        source: ImageSource,
        graph: ImageGraph,
        missing: list[Descriptor],
        name: str,
        written: Written,
    ) -> None:
        """Stream the archive (from a producer thread) into ``POST /images/load``."""
        chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        sent = [0]

        def produce() -> None:
            try:
                for data in _archive(source, graph, missing, name):
                    chunks.put(data)
                    sent[0] += len(data)
            except BaseException as err:  # handed to the consumer
                chunks.put(err)
            finally:
                chunks.put(None)

        def stream() -> Iterator[bytes]:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item

        def load() -> None:
            try:
                for event in self._client.load_image(stream()):
                    if isinstance(event, dict) and event.get("error"):
                        raise PushFailed(f"docker load on the node failed: {event['error']}")
            except docker.errors.DockerException as err:
                raise PushFailed(f"docker load on the node failed: {err}") from err

        producer = threading.Thread(target=produce, name="nodeload-docker-archive", daemon=True)
        producer.start()
        try:
            await asyncio.to_thread(load)
        finally:
            producer.join(timeout=1)
        written.bytes += sum(layer.size for layer in missing) + graph.config.desc.size
        written.blobs.update([*(layer.digest for layer in missing), graph.config.desc.digest])


def _archive(source: ImageSource, graph: ImageGraph, missing: list[Descriptor], name: str) -> Iterator[bytes]:
    """A ``docker save``-format tar: manifest.json, the config, and only the missing layers' files."""
    config_hex = graph.config.desc.digest.removeprefix("sha256:")
    layers = [f"{hashlib.sha256(layer.digest.encode()).hexdigest()}/layer.tar" for layer in graph.layers]
    manifest = json.dumps([{"Config": f"{config_hex}.json", "RepoTags": [name], "Layers": layers}]).encode()
    yield _member("manifest.json", manifest)
    yield _member(f"{config_hex}.json", graph.config.data)
    sending = {layer.digest for layer in missing}
    for layer, path in zip(graph.layers, layers, strict=True):
        if layer.digest not in sending:
            continue  # docker load finds this layer's chain on the node and never opens the file
        yield _header(path, layer.size)
        left = layer.size
        with source.open_blob(layer) as blob:
            while left > 0:
                data = blob.read(min(_CHUNK, left))
                if not data:
                    raise PushFailed(f"source ended early while sending {layer.digest}")
                left -= len(data)
                yield data
        yield b"\0" * (-layer.size % _BLOCK)
    yield b"\0" * (2 * _BLOCK)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, len(data)) + data + b"\0" * (-len(data) % _BLOCK)
