"""An image whose Docker schema2 manifest we write ourselves around an exact config.

Docker's classic store keeps no manifest, only the config (whose digest is
the image ID) and uncompressed layers. The docker-daemon and docker-archive
sources compress the layers (see layer_cache) and describe them with a
manifest serialized by ``canonical_json``: the same config and layers always
give the same manifest digest.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import IO

from nodeload.errors import SourceError
from nodeload.image import (
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP,
    MEDIA_DOCKER_MANIFEST,
    Descriptor,
    canonical_json,
    check_digest,
    descriptor_for,
)
from nodeload.jsondoc import Doc, parse
from nodeload.platforms import Platform
from nodeload.sources.base import Closeable
from nodeload.sources.layer_cache import CachedLayer

Opener = Callable[[int], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class LayerBlob:
    """One gzip layer of a synthesized image and how to stream it.

    ``rebuild``, when set, throws away a cached copy and derives the layer again.
    """

    diff_id: str
    digest: str
    size: int
    open: Opener  # offset -> stream
    rebuild: Callable[[], LayerBlob] | None = None

    @classmethod
    def cached(cls, layer: CachedLayer, rebuild: Callable[[], LayerBlob] | None = None) -> LayerBlob:
        """The layer as compressed into the cache."""
        return cls(layer.diff_id, layer.digest, layer.size, layer.open, rebuild)


def layer_descriptor(digest: str, size: int) -> Descriptor:
    """How a synthesized manifest describes a gzip layer."""
    return Descriptor(MEDIA_DOCKER_LAYER_GZIP, digest, size)


def parse_config(data: bytes, where: str) -> Doc:
    """An image config as JSON, or SourceError naming ``where`` it came from."""
    return parse(data, f"the image config {where}")


def config_diff_ids(config: Doc) -> list[str]:
    """The config's ``rootfs.diff_ids``: the uncompressed digest of each layer."""
    rootfs = config.opt_obj("rootfs")
    ids = rootfs.texts("diff_ids") if rootfs else []
    return [check_digest(d, f"{config.where}: rootfs.diff_ids") for d in ids]


def _platform(config: Doc) -> Platform | None:
    platform = Platform.from_json(config)
    return platform if platform.os and platform.architecture else None


class SynthesizedImage(Closeable):
    """An ImageSource over a config and gzip layers; ``rewritable`` is True."""

    def __init__(
        self,
        reference: str | None,
        config: bytes,
        layers: Sequence[LayerBlob],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """Describe ``layers`` (in config order) with a synthesized manifest.

        Raises:
            SourceError: when the layers do not match the config's diff_ids.
        """
        doc = parse_config(config, reference or "image")
        if config_diff_ids(doc) != [layer.diff_id for layer in layers]:
            raise SourceError(f"{reference or 'image'}: the layers do not match the config's diff_ids")
        self._reference, self._config, self._on_close = reference, config, on_close
        self.config_descriptor = descriptor_for(MEDIA_DOCKER_CONFIG, config)
        self.layers = tuple(layers)
        self._manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_DOCKER_MANIFEST,
                "config": self.config_descriptor.to_json(),
                "layers": [self._layer_descriptor(layer).to_json() for layer in layers],
            }
        )
        root = descriptor_for(MEDIA_DOCKER_MANIFEST, self._manifest)
        self._root = Descriptor(root.media_type, root.digest, root.size, platform=_platform(doc))
        self._documents = {root.digest: self._manifest, self.config_descriptor.digest: config}
        self._layers_by_digest = {layer.digest: layer for layer in layers}
        self._refresh_lock = threading.Lock()
        self._refreshed: set[str] = set()

    @staticmethod
    def _layer_descriptor(layer: LayerBlob) -> Descriptor:
        return layer_descriptor(layer.digest, layer.size)

    @property
    def reference(self) -> str | None:
        """The image's name (normalized), if it has one."""
        return self._reference

    @property
    def root(self) -> Descriptor:
        """The synthesized manifest."""
        return self._root

    @property
    def rewritable(self) -> bool:
        """Always True: we wrote the manifest, a layer may be swapped for its twin."""
        return True

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream the manifest, the config or a layer from ``offset``.

        Raises:
            SourceError: for a digest that is not part of this image.
        """
        document = self._documents.get(desc.digest)
        if document is not None:
            return nullcontext(io.BytesIO(document[offset:]))
        layer = self._layers_by_digest.get(desc.digest)
        if layer is None:
            name = self._reference or self._root.digest
            raise SourceError(f"blob {desc.digest} is not part of image {name}")
        return layer.open(offset)

    def refresh(self, desc: Descriptor) -> bool:
        """Rebuild a cached layer a node found corrupt; at most once per layer.

        Raises:
            SourceError: when the rebuilt layer has another digest (the manifest would change).
        """
        with self._refresh_lock:
            layer = self._layers_by_digest.get(desc.digest)
            if layer is None or layer.rebuild is None or desc.digest in self._refreshed:
                return False
            self._refreshed.add(desc.digest)
            rebuilt = layer.rebuild()
            if rebuilt.digest != layer.digest or rebuilt.size != layer.size:
                raise SourceError(
                    f"layer {layer.diff_id} compressed to {rebuilt.digest} this time, not {layer.digest}"
                )
            self._layers_by_digest[desc.digest] = rebuilt
            return True

    def close(self) -> None:
        """Release the archive or files the layers are read from."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
