"""The bounded, typed document reader every source parses through."""

from __future__ import annotations

import json

import pytest

from nodeload.errors import SourceError
from nodeload.image import Descriptor
from nodeload.jsondoc import MAX_DEPTH, MAX_DOCUMENT_BYTES, parse, parse_any


def test_typed_fields() -> None:
    doc = parse(b'{"a": "x", "n": 3, "l": ["p", "q"], "o": {"k": "v"}}', "doc.json")
    assert doc.text("a") == "x" and doc.text("missing", "d") == "d"
    assert doc.size("n") == 3
    assert doc.texts("l") == ["p", "q"] and doc.array("missing") == []
    assert doc.text_map("o") == {"k": "v"} and doc.opt_obj("missing") is None


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (
            json.dumps({"a": [[[[{"b": 1}]]]] * 1}).encode().replace(b"1", b"[" * 40 + b"1" + b"]" * 40),
            "nested",
        ),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b" " * (MAX_DOCUMENT_BYTES + 1), "too large"),
    ],
)
def test_hostile_documents_fail_cleanly(data: bytes, says: str) -> None:
    with pytest.raises(SourceError, match=says):
        parse(data, "doc.json")


def test_depth_limit_is_exact() -> None:
    deep_ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_any(deep_ok.encode(), "x") is not None
    with pytest.raises(SourceError, match="nested more than"):
        parse_any(("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2)).encode(), "x")


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"digest": "sha256:" + "a" * 64}, "'size' is missing"),
        ({"digest": "sha256:" + "a" * 64, "size": True}, "'size' must be an integer"),
        ({"digest": "sha256:" + "a" * 64, "size": 1 << 63}, "out of range"),
        ({"digest": "sha256:" + "a" * 64, "size": -1}, "out of range"),
        ({"digest": "sha256:../../etc/passwd", "size": 1}, "invalid digest"),
        ({"digest": "md5:" + "a" * 32, "size": 1}, "invalid digest"),
        ({"digest": 7, "size": 1}, "'digest' must be a string"),
        ({"digest": "sha256:" + "a" * 64, "size": 1, "annotations": {"k": 1}}, "'k' must be a string"),
        ({"digest": "sha256:" + "a" * 64, "size": 1, "platform": "linux"}, "'platform' must be an object"),
        ({"digest": "sha256:" + "a" * 64, "size": 1, "platform": {"os": ["linux"]}}, "'os' must be a string"),
    ],
)
def test_descriptor_fields_are_checked(doc: dict[str, object], says: str) -> None:
    with pytest.raises(SourceError, match=says) as err:
        Descriptor.from_json(parse(json.dumps(doc).encode(), "index.json"))
    assert "index.json" in str(err.value)
