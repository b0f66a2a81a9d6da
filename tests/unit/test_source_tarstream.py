"""The lean tar stream reader agrees with tarfile on what Docker and Go write."""

from __future__ import annotations

import io
import tarfile

import pytest

from nodeload.sources.tarstream import TarStreamError, iter_files


def _archive(fmt: int, entries: list[tuple[str, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a-link")
        link.type, link.linkname = tarfile.SYMTYPE, "somewhere"
        tar.addfile(link)
    return out.getvalue()


LONG = "d" * 80 + "/" + "f" * 120  # beyond ustar's 100-byte name: prefix, PAX or GNU long name
ENTRIES: list[tuple[str, bytes | None]] = [
    ("dir", None),
    ("dir/empty", b""),
    ("dir/small", b"x" * 513),
    (LONG, bytes(range(256)) * 40),
    ("blobs/sha256/" + "a" * 64, b"layer" * 1000),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_the_same_files_as_tarfile(fmt: int) -> None:
    entries = ENTRIES if fmt != tarfile.USTAR_FORMAT else [e for e in ENTRIES if e[0] != LONG]
    data = _archive(fmt, entries)
    seen = [(m.name, m.read()) for m in iter_files(io.BytesIO(data))]
    assert seen == [(name, body) for name, body in entries if body is not None]


def test_unread_and_partly_read_members_are_skipped_correctly() -> None:
    data = _archive(tarfile.PAX_FORMAT, ENTRIES)
    names = []
    for member in iter_files(io.BytesIO(data)):
        member.read(7)  # leave most of it for the reader to skip
        names.append(member.name)
    assert names == [name for name, body in ENTRIES if body is not None]


def test_reads_are_bounded_by_the_member() -> None:
    data = _archive(tarfile.PAX_FORMAT, [("one", b"1" * 100), ("two", b"2" * 100)])
    first = next(iter_files(io.BytesIO(data)))
    assert first.read(10_000) == b"1" * 100
    assert first.read() == b""


def test_a_cut_stream_is_an_error() -> None:
    data = _archive(tarfile.PAX_FORMAT, [("big", b"z" * 5000)])
    with pytest.raises(TarStreamError):
        for member in iter_files(io.BytesIO(data[:2048])):
            member.read()


def test_garbage_is_not_a_tar() -> None:
    with pytest.raises(TarStreamError):
        list(iter_files(io.BytesIO(b"{" + b"x" * 1023)))


def _pax_stream(record: bytes) -> bytes:
    """A tar stream whose first member has a PAX header holding ``record``."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, len(record)
    member = tarfile.TarInfo("file")
    member.size = 1
    blocks = header.tobuf(format=tarfile.USTAR_FORMAT) + record + b"\0" * (-len(record) % 512)
    return blocks + member.tobuf(format=tarfile.USTAR_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024


@pytest.mark.timeout(10)
@pytest.mark.parametrize("record", [b"0 path=x\n", b"3 path=x\n", b"99 path=x\n", b"x path=x\n", b"path=x"])
def test_malformed_pax_records_are_errors_not_loops(record: bytes) -> None:
    with pytest.raises(TarStreamError, match="PAX"):
        list(iter_files(io.BytesIO(_pax_stream(record))))


def test_a_good_pax_path_is_used() -> None:
    record = b"16 path=renamed\n"
    assert [m.name for m in iter_files(io.BytesIO(_pax_stream(record)))] == ["renamed"]
