"""``docker save`` tarballs (``docker-archive:FILE[:REF]``).

``manifest.json`` lists each image's config and layer files. Docker < 25
writes ``<v1 id>/layer.tar`` (duplicates as symlinks); Docker 25+ writes an
OCI layout and points at ``blobs/sha256/<hex>``. Layers are uncompressed tars
in the classic store (compressed once into the layer cache) and may already
be gzip with the containerd store (served from the archive as they are).
"""

from __future__ import annotations

import functools
from pathlib import Path

from nodeload.errors import ImageNotFound, SourceError
from nodeload.image import sniff
from nodeload.jsondoc import Doc, parse_any
from nodeload.sources.archive import Member, TarIndex
from nodeload.sources.base import name_or_none
from nodeload.sources.compress import expansion_limit, hash_stream, open_uncompressed
from nodeload.sources.layer_cache import CachedLayer, LayerCache
from nodeload.sources.oci_layout import digest_of_blob_path
from nodeload.sources.synthesized import LayerBlob, SynthesizedImage, config_diff_ids, parse_config


def open_docker_archive(
    path: Path, ref: str | None = None, *, cache: LayerCache | None = None
) -> SynthesizedImage:
    """The image ``ref`` names in a ``docker save`` tarball (gzip/zstd allowed).

    Args:
        path: the archive.
        ref: one of its RepoTags (compared normalized), or ``@N`` for the
            N-th image; may be omitted when the archive holds one image.
        cache: where uncompressed layers are compressed to.

    Raises:
        ImageNotFound: when no image has the tag ``ref``.
        SourceError: when the archive is unreadable or malformed.
    """
    cache = cache or LayerCache()
    index = TarIndex(path, cache.scratch)
    try:
        entries = _manifest_entries(index)
        entry, reference = _select(entries, ref, f"docker-archive:{path}")
        config_name = entry.text("Config")
        config = index.read(config_name)
        diff_ids = config_diff_ids(parse_config(config, index.describe(config_name)))
        layer_names = entry.texts("Layers")
        if len(layer_names) != len(diff_ids):
            raise SourceError(
                f"{path}: manifest.json lists {len(layer_names)} layers but the config has {len(diff_ids)}"
            )
        layers = [_layer(index, cache, n, d) for n, d in zip(layer_names, diff_ids, strict=True)]
        return SynthesizedImage(reference, config, layers, on_close=index.close)
    except BaseException:
        index.close()
        raise


def _manifest_entries(index: TarIndex) -> list[Doc]:
    where = index.describe("manifest.json")
    doc = parse_any(index.read("manifest.json"), where)
    if not isinstance(doc, list) or not all(isinstance(e, dict) and "Config" in e for e in doc):
        raise SourceError(f"{where} is not a docker save manifest")
    return [Doc(entry, f"{where}[{i}]") for i, entry in enumerate(doc)]


def _tags(entry: Doc) -> list[str]:
    names = (name_or_none(tag) for tag in entry.texts("RepoTags"))
    return [name for name in names if name]


def _select(entries: list[Doc], ref: str | None, where: str) -> tuple[Doc, str | None]:
    """The entry ``ref`` names, and the image's reference (the tag chosen, else its first)."""
    if ref is not None and ref.startswith("@"):
        return _select_by_position(entries, ref, where)
    if ref is None:
        if len(entries) != 1:
            tags = ", ".join(t for e in entries for t in _tags(e)) or "untagged images only"
            raise SourceError(f"{where} holds {len(entries)} images; choose one as {where}:REF ({tags})")
        return entries[0], next(iter(_tags(entries[0])), None)
    want = name_or_none(ref)
    for entry in entries:
        if want is not None and want in _tags(entry):
            return entry, want
    available = ", ".join(t for e in entries for t in _tags(e)) or "untagged images only"
    raise ImageNotFound(f"no image {ref!r} in {where}; it holds: {available}")


def _select_by_position(entries: list[Doc], ref: str, where: str) -> tuple[Doc, str | None]:
    # skopeo's docker-archive:FILE:@N picks the N-th image (from 0).
    if not ref[1:].isdigit() or int(ref[1:]) >= len(entries):
        raise ImageNotFound(f"{where}:{ref}: the archive holds images @0 to @{len(entries) - 1}")
    entry = entries[int(ref[1:])]
    return entry, next(iter(_tags(entry)), None)


def _layer(index: TarIndex, cache: LayerCache, name: str, diff_id: str) -> LayerBlob:
    member = index.member(name)
    if sniff(index.head(member)) == "gzip":
        return _gzip_layer(index, member, diff_id)
    cached = cache.lookup(diff_id) or _compress(index, cache, member, diff_id)

    def rebuild() -> LayerBlob:
        cache.evict(diff_id)
        return LayerBlob.cached(_compress(index, cache, member, diff_id))

    return LayerBlob.cached(cached, rebuild)


def _compress(index: TarIndex, cache: LayerCache, member: Member, diff_id: str) -> CachedLayer:
    """Compress an uncompressed (or zstd) layer of the archive into the cache."""
    where = index.describe(member.name)
    with (
        index.open(member) as stream,
        open_uncompressed(stream, expansion_limit(member.size), where) as tar,
    ):
        cached = cache.add(tar, {diff_id})
    if cached is None:
        raise SourceError(f"{where} does not match the config's diff_id {diff_id}")
    return cached


def _gzip_layer(index: TarIndex, member: Member, diff_id: str) -> LayerBlob:
    """A layer already gzip-compressed in the archive, used as it is."""
    digest = digest_of_blob_path(member.name)  # OCI-style names carry the digest
    if digest is None:
        with index.open(member) as stream:
            digest, _ = hash_stream(stream)
    return LayerBlob(diff_id, digest, member.size, functools.partial(index.open, member))
