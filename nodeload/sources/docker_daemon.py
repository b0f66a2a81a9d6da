"""Images of the local Docker engine (``docker-daemon:REF``, or a bare ``REF``).

Everything goes through the Engine API (``docker`` SDK), never the CLI:

1. inspect the image: its ID is its config's digest, ``RootFS.Layers`` its diffIDs;
2. if the config and every layer are in the layer cache, that is all;
3. else stream ``docker save`` once through a lean tar reader and
   compress what is missing into the cache, skipping cached layers cheaply:
   OCI-style members are named by diffID (skipped unread); legacy members
   (``<v1 id>/layer.tar``) whose size equals a cached layer's uncompressed
   size are only hashed to confirm. A guess that proves wrong costs one more
   save pass, without guessing.

Docker's containerd image store (image ID = manifest digest) is not read
this way: ``docker save -o FILE`` and ``docker-archive:FILE`` read it.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import requests

from nodeload.dockerapi import engine_client, unreachable
from nodeload.early import LayerListener, ReadyLayer
from nodeload.errors import ImageNotFound, LocalImageNotFound, SourceError
from nodeload.image import check_digest, sha256_digest
from nodeload.jsondoc import MAX_DOCUMENT_BYTES, Doc
from nodeload.sources.base import name_or_none
from nodeload.sources.compress import hash_stream, open_uncompressed
from nodeload.sources.layer_cache import CachedLayer, LayerCache
from nodeload.sources.oci_layout import digest_of_blob_path
from nodeload.sources.streams import CHUNK, IterReader, Prefixed, Reader, read_full
from nodeload.sources.synthesized import LayerBlob, SynthesizedImage, layer_descriptor
from nodeload.sources.tarstream import TarStreamError, iter_files


class EngineAPI(Protocol):
    """The part of ``docker.APIClient`` this source uses (tests pass a fake)."""

    def inspect_image(self, image: str) -> dict[str, Any]:
        """``GET /images/{name}/json``."""
        ...

    def get_image(self, image: str, chunk_size: int | None = ...) -> Iterator[bytes]:
        """``GET /images/{name}/get``: the ``docker save`` tarball, streamed."""
        ...

    def images(self) -> list[dict[str, Any]]:
        """``GET /images/json``: every image, with its ``RepoTags``."""
        ...


def engine_api() -> EngineAPI:
    """The local Docker engine's API client (DOCKER_HOST, the Docker context, the default socket).

    Raises:
        SourceError: when no engine answers.
    """
    api: EngineAPI = engine_client().api
    return api


def open_docker_daemon(
    ref: str,
    *,
    api: EngineAPI | None = None,
    cache: LayerCache | None = None,
    listener: LayerListener | None = None,
) -> SynthesizedImage:
    """The image ``ref`` (a name or an image ID) of the local Docker engine.

    ``listener`` hears of each layer as soon as it can be streamed (cached ones at once, the
    others as the export compresses them), so that nodes can start on them early.

    Raises:
        ImageNotFound: when the engine has no such image.
        SourceError: when the engine is unreachable or its export is unusable.
    """
    api = api or engine_api()
    cache = cache or LayerCache()
    info = _inspect(api, ref)
    image_id, diff_ids = _identity(info, ref)
    config = cache.load_config(image_id)
    on_layer = _announcer(listener, cache, diff_ids)
    if config is None or any(cache.lookup(d) is None for d in diff_ids):
        config = _Export(api, image_id, frozenset(diff_ids), cache, on_layer).run()
    layers = [_cached_blob(api, cache, image_id, d, ref) for d in diff_ids]
    return SynthesizedImage(own_name(ref, info), config, layers)


def _announcer(
    listener: LayerListener | None, cache: LayerCache, diff_ids: list[str]
) -> Callable[[CachedLayer], None]:
    """Tell ``listener`` the image's layers and each one already cached; the callback for the rest."""
    if listener is None:
        return lambda layer: None

    def announce(layer: CachedLayer) -> None:
        listener.ready(ReadyLayer(layer_descriptor(layer.digest, layer.size), layer.diff_id, layer.open))

    listener.expect(diff_ids)
    for diff_id in dict.fromkeys(diff_ids):
        cached = cache.lookup(diff_id)
        if cached is not None:
            announce(cached)
    return announce


def require_image(ref: str, api: EngineAPI | None = None) -> None:
    """Check that the local engine has the image ``ref``, before anything else is done.

    Raises:
        LocalImageNotFound: it has none such (naming the closest names it has).
        SourceError: the engine cannot be asked.
    """
    api = api or engine_api()
    try:
        _inspect(api, ref)
    except ImageNotFound:
        close = difflib.get_close_matches(ref, _local_names(api), n=3, cutoff=0.6)
        guess = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise LocalImageNotFound(
            f"image {ref!r} is not in the local Docker engine{guess}; docker images lists what is there"
        ) from None


def _local_names(api: EngineAPI) -> list[str]:
    """Every ``name:tag`` of the engine's images (none, if it will not say)."""
    try:
        listed = api.images()
    except (docker.errors.DockerException, requests.RequestException):
        return []
    return [tag for image in listed for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"]


def _inspect(api: EngineAPI, ref: str) -> dict[str, Any]:
    try:
        return api.inspect_image(ref)
    except docker.errors.NotFound as exc:
        raise ImageNotFound(
            f"image {ref!r} not found in the local Docker daemon (docker images lists what is there)"
        ) from exc
    except docker.errors.APIError as exc:
        raise SourceError(f"Docker could not inspect {ref!r}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise SourceError(unreachable(exc)) from exc


def _identity(info: dict[str, Any], ref: str) -> tuple[str, list[str]]:
    """The image ID (its config's digest) and its layers' diffIDs, as the engine reports them."""
    doc = Doc(info, f"docker inspect of {ref!r}")
    rootfs = doc.opt_obj("RootFS")
    layers = rootfs.texts("Layers") if rootfs else []
    where = f"docker inspect of {ref!r}"
    return check_digest(doc.text("Id"), where), [check_digest(d, where) for d in layers]


def _cached_blob(api: EngineAPI, cache: LayerCache, image_id: str, diff_id: str, ref: str) -> LayerBlob:
    """A cached layer, which can be evicted and exported again if a node finds it corrupt."""

    def rebuild() -> LayerBlob:
        cache.evict(diff_id)
        _Export(api, image_id, frozenset({diff_id}), cache).run()
        return LayerBlob.cached(_cached(cache, diff_id, ref))

    return LayerBlob.cached(_cached(cache, diff_id, ref), rebuild)


def _cached(cache: LayerCache, diff_id: str, ref: str) -> CachedLayer:
    layer = cache.lookup(diff_id)
    if layer is None:
        raise SourceError(f"docker save of {ref!r} did not contain its layer {diff_id}")
    return layer


def own_name(ref: str, info: dict[str, Any]) -> str | None:
    """The name the user gave if it is one of the image's tags, else its first tag."""
    tags = [name for name in map(name_or_none, Doc(info, "docker inspect").texts("RepoTags")) if name]
    mine = name_or_none(ref)
    return mine if mine in tags else next(iter(tags), None)


@dataclass
class _Export:
    """One image's ``docker save``, read as a stream, filling the cache."""

    api: EngineAPI
    image_id: str
    needed: frozenset[str]
    cache: LayerCache
    on_layer: Callable[[CachedLayer], None] = lambda layer: None  # each needed layer, once cached
    learned: dict[str, str] = field(default_factory=dict)  # member name -> diffID
    config: bytes = b""
    # Per pass: uncompressed size -> cached needed layers not yet seen in the stream.
    _unseen_cached: dict[int, set[str]] = field(default_factory=dict)

    def run(self) -> bytes:
        """Save passes until every layer is cached (one, or two after a wrong size guess).

        Returns:
            The config bytes.
        """
        for guess in (True, False):
            self._save_pass(guess)
            if not self._missing():
                break
        return self.config

    def _missing(self) -> set[str]:
        return {d for d in self.needed if self.cache.lookup(d) is None}

    def _save_pass(self, guess: bool) -> None:
        config_seen = False
        self._expect_cached()
        try:
            chunks = self.api.get_image(self.image_id, chunk_size=CHUNK)
            stream = io.BufferedReader(IterReader(iter(chunks)), CHUNK)
            for member in iter_files(stream):
                config_seen |= self._member(member.name.removeprefix("./"), member.size, member, guess)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise SourceError(f"docker save of {self.image_id} failed: {exc}") from exc
        except TarStreamError as exc:
            raise SourceError(f"docker save of {self.image_id} is not a readable tar: {exc}") from exc
        if not config_seen:
            raise SourceError(
                f"docker save of {self.image_id} has no config named after the image ID (is the engine "
                "using the containerd image store?); use docker save -o FILE and docker-archive:FILE"
            )

    def _member(self, name: str, size: int, member: Reader, guess: bool) -> bool:
        """Handle one member of the save stream; True when it was the config."""
        hexid = self.image_id.removeprefix("sha256:")
        if name in (f"{hexid}.json", f"blobs/sha256/{hexid}"):
            self._config(member, size)
            return True
        digest = digest_of_blob_path(name)
        if digest in self.needed:
            if self.cache.lookup(digest) is None:
                layer = self.cache.add(member, {digest})
                if layer is None:
                    raise SourceError(f"docker save of {self.image_id}: {name} does not match its digest")
                self.on_layer(layer)
        elif name.endswith("/layer.tar") or digest is not None:
            self._unnamed_layer(name, size, member, guess)
        return False

    def _config(self, member: Reader, size: int) -> None:
        if size > MAX_DOCUMENT_BYTES:
            raise SourceError(f"docker save of {self.image_id}: the config is {size} bytes")
        data = read_full(member, size)
        if sha256_digest(data) != self.image_id:
            raise SourceError(f"docker save of {self.image_id}: the config does not match the image ID")
        self.cache.store_config(data)
        self.config = data

    def _unnamed_layer(self, name: str, size: int, member: Reader, guess: bool) -> None:
        """A member whose name does not tell its diffID (legacy ``layer.tar``, compressed blob)."""
        known = self.learned.get(name)
        if known is not None and self.cache.lookup(known) is not None:
            return  # identified in the previous pass
        head = read_full(member, 1)
        if head == b"{":
            return  # a JSON document (OCI-style index or manifest), not a layer
        candidates = self._unseen_cached.get(size) if guess else None
        if candidates:
            diff_id = hash_stream(Prefixed(head, member))[0]  # confirms the guess; ~20x faster than gzip
            self.learned[name] = diff_id
            candidates.discard(diff_id)  # if absent, a new layer of that size: the next pass takes it
            return
        with open_uncompressed(Prefixed(head, member)) as tar:
            layer = self.cache.add(tar, self.needed)
        if layer is not None:
            self.learned[name] = layer.diff_id
            self.on_layer(layer)

    def _expect_cached(self) -> None:
        """Index the cached layers by uncompressed size: a legacy member of that size is probably one."""
        self._unseen_cached = {}
        for diff_id in self.needed:
            layer = self.cache.lookup(diff_id)
            if layer is not None:
                self._unseen_cached.setdefault(layer.uncompressed_size, set()).add(diff_id)
