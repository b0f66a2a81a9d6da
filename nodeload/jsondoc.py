"""Bounded, typed reading of the JSON documents images are made of.

Every index, manifest, config, ``index.json`` and ``manifest.json`` comes from a
source the user may not control. They are parsed here with their size and
nesting bounded, and read through accessors that check each field's type, so a
malformed document fails with a :class:`~nodeload.errors.SourceError` naming the
document and the field, never with a ``KeyError`` or ``RecursionError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from nodeload.errors import SourceError

# Documents above this size are not image metadata; refuse rather than load them.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# Real image documents nest four or five levels deep; anything far beyond is hostile.
MAX_DEPTH = 32
# A size or offset protobuf (int64) and containerd can represent.
MAX_SIZE = (1 << 63) - 1


def parse(data: bytes, where: str) -> Doc:
    """A JSON object read from ``data``, or SourceError naming ``where`` it came from."""
    value = parse_any(data, where)
    if not isinstance(value, dict):
        raise SourceError(f"{where} is not a JSON object")
    return Doc(value, where)


def parse_any(data: bytes, where: str) -> Any:
    """Any JSON value (size and nesting bounded)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SourceError(f"{where} is {len(data)} bytes, too large for image metadata")
    try:
        value = json.loads(data)
    except RecursionError:
        raise SourceError(f"{where} is nested too deeply to be image metadata") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise SourceError(f"{where} is not valid JSON ({exc})") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise SourceError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


class Doc:
    """A JSON object with typed accessors; ``where`` names it (and the path within) in errors."""

    def __init__(self, value: dict[str, Any], where: str) -> None:
        """Wrap an already parsed object."""
        self.raw = value
        self.where = where

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def _wrong(self, key: str, wanted: str) -> SourceError:
        return SourceError(f"{self.where}: {key!r} must be {wanted}, not {_kind(self.raw[key])}")

    def text(self, key: str, default: str | None = "") -> str:
        """A string field; ``default`` when absent or null (None: the field is required)."""
        value = self.raw.get(key)
        if value is None:
            if default is None:
                raise SourceError(f"{self.where}: {key!r} is missing")
            return default
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def size(self, key: str) -> int:
        """A required non-negative integer that fits in an int64."""
        if key not in self.raw:
            raise SourceError(f"{self.where}: {key!r} is missing")
        value = self.raw[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer")
        if not 0 <= value <= MAX_SIZE:
            raise SourceError(f"{self.where}: {key!r} is out of range ({value})")
        return value

    def obj(self, key: str) -> Doc:
        """A required object field."""
        found = self.opt_obj(key)
        if found is None:
            raise SourceError(f"{self.where}: {key!r} is missing")
        return found

    def opt_obj(self, key: str) -> Doc | None:
        """An object field, or None when absent or null."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(key, "an object")
        return Doc(value, f"{self.where}: {key}")

    def array(self, key: str) -> list[Any]:
        """A list field; empty when absent or null."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(key, "a list")
        return value

    def objs(self, key: str) -> Iterator[Doc]:
        """A list field whose items are all objects."""
        for i, item in enumerate(self.array(key)):
            if not isinstance(item, dict):
                raise SourceError(f"{self.where}: {key}[{i}] must be an object, not {_kind(item)}")
            yield Doc(item, f"{self.where}: {key}[{i}]")

    def texts(self, key: str) -> list[str]:
        """A list field whose items are all strings."""
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise SourceError(f"{self.where}: {key}[{i}] must be a string, not {_kind(item)}")
        return items

    def text_map(self, key: str) -> dict[str, str]:
        """An object field of string values (annotations, labels); empty when absent."""
        found = self.opt_obj(key)
        if found is None:
            return {}
        for name, value in found.raw.items():
            if not isinstance(value, str):
                raise SourceError(f"{found.where}: {name!r} must be a string, not {_kind(value)}")
        return dict(found.raw)


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: an absent field, or one of another
    type, reads as empty (for documents read leniently: Kubernetes objects, inventories)."""
    return value if isinstance(value, Mapping) else {}


def array(value: object) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one (see :func:`mapping`)."""
    return value if isinstance(value, list) else []
