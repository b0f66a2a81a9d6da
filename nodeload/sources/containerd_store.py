"""Images in a containerd on this machine (``containerd:REF``): read through its gRPC API.

nerdctl and BuildKit leave an image here already compressed, as do Docker Engines whose
image store is containerd (namespace ``moby``): its blobs are streamed from the content
store as they are, with no export and no recompression. The socket and namespace are
found as ``ctr`` and ``nerdctl`` find them: an explicit option, else
``$CONTAINERD_ADDRESS`` / ``$CONTAINERD_NAMESPACE``, else the standard socket and the
``default`` namespace.

The client is gRPC's synchronous one: sources are read from worker threads.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import IO, TYPE_CHECKING, Any

import grpc

from nodeload.containerd.api import content_pb2, content_pb2_grpc, images_pb2, images_pb2_grpc
from nodeload.errors import ImageNotFound, SourceError, UsageError
from nodeload.image import Descriptor, check_digest
from nodeload.reference import normalize, parse_reference
from nodeload.sources.base import Closeable
from nodeload.text import printable
from nodeload.wording import setting

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE = "default"
# Listing images and reading documents are quick; a layer read has no deadline (it may be big).
_CALL_TIMEOUT = 30.0


def source_address(explicit: str | None = None) -> str:
    """The socket to read images from: ``explicit``, ``$CONTAINERD_ADDRESS``, the default."""
    return explicit or os.environ.get("CONTAINERD_ADDRESS") or DEFAULT_ADDRESS


def source_namespace(explicit: str | None = None) -> str:
    """The namespace to read images from: ``explicit``, ``$CONTAINERD_NAMESPACE``, ``default``."""
    return explicit or os.environ.get("CONTAINERD_NAMESPACE") or DEFAULT_NAMESPACE


class ContainerdStoreSource(Closeable):
    """One image record of a local containerd and the content it points at."""

    def __init__(self, address: str, namespace: str, ref: str) -> None:
        """Connect to containerd at ``address`` and find ``ref`` in ``namespace``.

        Raises:
            ImageNotFound: no record of that name in the namespace.
            SourceError: containerd cannot be reached or refuses the call.
        """
        self._where = f"namespace {namespace!r} of the containerd at {address}"
        self._metadata = (("containerd-namespace", namespace),)
        target = address if address.startswith(("unix:", "unix-abstract:")) else f"unix:{address}"
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.default_authority", "localhost"),
                ("grpc.max_receive_message_length", 32 << 20),
                ("grpc.http2.bdp_probe", 0),
            ],
        )
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        try:
            self._name, self._root = self._find(ref)
        except BaseException:
            self.close()
            raise

    def _find(self, ref: str) -> tuple[str, Descriptor]:
        """The record ``ref`` names: as written, else normalized (``app:v1`` is stored as
        ``docker.io/library/app:v1`` by nerdctl, BuildKit and Docker)."""
        names = dict.fromkeys([ref, normalize(ref)])
        for name in names:
            image = self._get_image(name)
            if image is not None:
                return image.name, _descriptor(image.target, f"image {name} in {self._where}")
        digest = parse_reference(ref).digest
        if digest:
            # name@digest: any record of that repository pointing at that digest will do.
            repository = _repository_of(ref)
            for image in self._list_images(f'target.digest=="{digest}"'):
                if _repository_of(image.name) == repository:
                    return image.name, _descriptor(image.target, f"image {image.name} in {self._where}")
        raise ImageNotFound(
            f"no image {ref!r} in {self._where} (list them with: ctr -a {self._address_of()} "
            f"-n {self._metadata[0][1]} images ls; {setting('source_namespace')} and "
            f"{setting('source_socket')} choose others)"
        )

    def _address_of(self) -> str:
        return self._where.rpartition(" at ")[2]

    def _get_image(self, name: str) -> images_pb2.Image | None:
        try:
            resp = self._images.Get(images_pb2.GetImageRequest(name=name), **self._call())
        except grpc.RpcError as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise self._error(f"looking up {name!r}", err) from err
        image: images_pb2.Image = resp.image
        return image

    def _list_images(self, flt: str) -> list[images_pb2.Image]:
        try:
            resp = self._images.List(images_pb2.ListImagesRequest(filters=[flt]), **self._call())
        except grpc.RpcError as err:
            raise self._error("listing images", err) from err
        return list(resp.images)

    def _call(self) -> dict[str, Any]:
        return {"metadata": self._metadata, "timeout": _CALL_TIMEOUT}

    def _error(self, what: str, err: grpc.RpcError) -> SourceError:
        code = _code(err)
        detail = printable(err.details() or str(code)) if isinstance(err, grpc.Call) else str(err)
        if code == grpc.StatusCode.UNAVAILABLE:
            return SourceError(
                f"cannot reach the containerd at {self._address_of()} while {what}: {detail} (is it "
                f"running, and may this user open its socket? {setting('source_socket')} or "
                "$CONTAINERD_ADDRESS names another)"
            )
        return SourceError(f"containerd refused {what} in {self._where}: {code.name}: {detail}")

    @property
    def reference(self) -> str | None:
        """The record's name, e.g. ``docker.io/library/app:v1``."""
        return self._name

    @property
    def root(self) -> Descriptor:
        """What the record points at: an index or a manifest."""
        return self._root

    @property
    def rewritable(self) -> bool:
        """False: these manifests are the image's own."""
        return False

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractContextManager[IO[bytes]]:
        """Stream a blob from the content store, from ``offset``."""
        return self._open(desc, offset)

    @contextmanager
    def _open(self, desc: Descriptor, offset: int) -> Iterator[IO[bytes]]:
        if offset >= desc.size:
            yield io.BytesIO(b"")
            return
        request = content_pb2.ReadContentRequest(digest=desc.digest, offset=offset, size=0)
        # No deadline: a big layer takes long; the call ends when the stream is closed.
        call = self._content.Read(request, metadata=self._metadata)
        reader = _CallReader(call, lambda err: self._blob_error(desc, err))
        try:
            yield reader  # type: ignore[misc]
        finally:
            call.cancel()

    def _blob_error(self, desc: Descriptor, err: grpc.RpcError) -> SourceError:
        if _code(err) == grpc.StatusCode.NOT_FOUND:
            return SourceError(
                f"blob {desc.digest} ({desc.media_type}) of {self._name} is not in the content store of "
                f"{self._where}: the image is only partly there (pulled for another platform, or its "
                "content was garbage-collected); pull it again with all its platforms"
            )
        return self._error(f"reading blob {desc.digest}", err)

    def refresh(self, desc: Descriptor) -> bool:
        """Nothing to rebuild: containerd verified the blob when it stored it."""
        return False

    def close(self) -> None:
        """Close the gRPC channel."""
        self._channel.close()


class _CallReader(io.RawIOBase):
    """The data of a streaming Read call as a raw stream."""

    def __init__(self, call: Any, error: Any) -> None:
        self._responses: Iterator[content_pb2.ReadContentResponse] = call
        self._error = error
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = memoryview(next(self._responses).data)
            except StopIteration:
                return 0
            except grpc.RpcError as err:
                raise self._error(err) from err
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _descriptor(target: Any, where: str) -> Descriptor:
    return Descriptor(
        media_type=printable(target.media_type),
        digest=check_digest(target.digest, where),
        size=int(target.size),
        annotations=dict(target.annotations),
    )


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    return err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN


def _repository_of(name: str) -> str | None:
    try:
        parsed = parse_reference(name)
    except UsageError:
        return None  # a record whose name is no image reference
    return f"{parsed.domain}/{parsed.path}"


def open_containerd_store(
    ref: str, *, address: str | None = None, namespace: str | None = None
) -> ContainerdStoreSource:
    """Open image ``ref`` of the local containerd (see :func:`source_address`, :func:`source_namespace`)."""
    return ContainerdStoreSource(source_address(address), source_namespace(namespace), ref)
