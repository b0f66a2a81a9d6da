"""A lean reader for tar streams that are read once, front to back (``docker save``).

``tarfile``'s stream mode copies every chunk several times; for a save of a
few hundred megabytes that costs as much as the daemon's own export. This
reader hands out each regular file as a bounded stream over the source and
understands what Docker and Go's archive/tar write: ustar (with its name
prefix), PAX ``path`` records, and GNU long names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from nodeload.errors import SourceError
from nodeload.sources.streams import Reader, drain, read_full

_BLOCK = 512


class TarStreamError(SourceError):
    """The stream is not a well-formed tar."""


_REGULAR = (b"0", b"\0", b"7")


@dataclass
class Member:
    """One regular file of the stream; ``read`` serves exactly ``size`` bytes."""

    name: str
    size: int
    _src: Reader
    _left: int = 0

    def __post_init__(self) -> None:
        self._left = self.size

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes of the file (all that is left when negative)."""
        want = self._left if size < 0 else min(size, self._left)
        if want <= 0:
            return b""
        data = self._src.read(want)
        if not data:
            raise TarStreamError("the tar stream ended inside a file")
        self._left -= len(data)
        return data

    def skip_rest(self) -> None:
        """Discard what the consumer did not read, plus the padding to the next header."""
        drain(self)
        padding = -self.size % _BLOCK
        if padding and len(read_full(self._src, padding)) != padding:
            raise TarStreamError("the tar stream ended inside padding")


def iter_files(src: Reader) -> Iterator[Member]:
    """Yield the regular files of a tar stream; other entries are skipped.

    Each member must be consumed (or not) before the next is requested.

    Raises:
        TarStreamError: when the stream is not a tar or ends early.
    """
    long_name: str | None = None
    while True:
        header = read_full(src, _BLOCK)
        if len(header) < _BLOCK or header == bytes(_BLOCK):
            return  # end-of-archive marker (or a stream cut right after a member)
        name, size, kind = _parse_header(header)
        if kind in (b"x", b"L"):
            extended = Member(name, size, src)
            data = read_full(extended, size)
            extended.skip_rest()
            long_name = _pax_path(data) if kind == b"x" else data.rstrip(b"\0").decode(errors="replace")
            continue
        member = Member(long_name or name, size, src)
        long_name = None
        if kind in _REGULAR:
            yield member
        member.skip_rest()


def _parse_header(header: bytes) -> tuple[str, int, bytes]:
    if _checksum(header) != _octal(header[148:156]):
        raise TarStreamError("not a tar stream (bad header checksum)")
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode(errors="replace"), _octal(header[124:136]), header[156:157]


def _octal(field: bytes) -> int:
    if field[:1] == b"\x80":  # base-256, for sizes beyond 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarStreamError(f"not a tar stream (bad number {text[:12]!r} in a header)") from None


def _checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a PAX extended header, if any.

    Each record is ``"<length> <key>=<value>\\n"``, the length counting the whole record.
    """
    pos = 0
    while pos < len(data) and data[pos:].strip(b"\0"):
        space = data.find(b" ", pos)
        digits = data[pos:space] if space > pos else b""
        length = int(digits) if digits.isdigit() else 0
        # A length that does not cover its own digits would loop forever or read backwards.
        if length <= len(digits) + 1 or pos + length > len(data):
            raise TarStreamError("not a tar stream (malformed PAX record)")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode(errors="replace")
        pos += length
    return None
