"""Patterns: inventory host patterns (ranges, ``host:port``) and ``--limit`` patterns."""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import itertools
import re
import string

from nodeload.errors import NodeSourceError
from nodeload.wording import setting

# One host pattern such as web[0:99999999] would otherwise materialize millions of names.
MAX_RANGE_HOSTS = 65_536


# -- host patterns ------------------------------------------------------------------

# [IPv6]:port, and host:port where the host may hold [a:b] ranges (Ansible's parse_address).
_BRACKETED_PORT = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])+):([0-9]+)")
_RANGE = re.compile(r"\[([^\]]*)\]")


class _BadPattern(ValueError):
    """A host pattern that names no valid hosts; the caller adds where it was."""


def _expand_host_pattern(token: str) -> tuple[list[str], int | None]:
    """The host names and port of an inventory host entry such as ``web[01:03]:2222``."""
    if token.endswith(":"):
        raise _BadPattern(f"host {token!r} ends in ':', which is reserved for a port")
    bracketed = _BRACKETED_PORT.fullmatch(token)
    if bracketed and _is_ipv6(bracketed.group(1)):
        return [bracketed.group(1)], _port_suffix(bracketed.group(2), token)
    if _is_ipv6(token):  # a bare IPv6 address has no port: its colons are its own
        return [token], None
    with_port = _HOST_PORT.fullmatch(token)
    if with_port:
        return _expand_ranges(with_port.group(1)), _port_suffix(with_port.group(2), token)
    return _expand_ranges(token), None


def _port_suffix(digits: str | None, token: str) -> int | None:
    if digits is None:
        return None
    if not 1 <= int(digits) <= 65535:
        raise _BadPattern(f"host {token!r} has an invalid port {digits} (expected 1-65535)")
    return int(digits)


def _is_ipv6(text: str) -> bool:
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _expand_ranges(pattern: str) -> list[str]:
    """Every name a pattern with ``[start:end(:step)]`` ranges stands for, in order."""
    pieces: list[list[str]] = []
    count = 1
    end = 0
    for match in _RANGE.finditer(pattern):
        values = _range_values(match.group(1), pattern)
        count *= len(values)
        if count > MAX_RANGE_HOSTS:
            raise _BadPattern(f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
        pieces += [[pattern[end : match.start()]], values]
        end = match.end()
    pieces.append([pattern[end:]])
    literal = "".join(piece[0] for piece in pieces[::2])
    if not literal and len(pieces) == 1:
        raise _BadPattern("empty host name")
    if "[" in literal or "]" in literal:
        raise _BadPattern(f"unbalanced brackets in host pattern {pattern!r}")
    return ["".join(parts) for parts in itertools.product(*pieces)]


def _range_values(spec: str, pattern: str) -> list[str]:
    """The values of one range: ``01:10`` keeps the width, ``a:f`` is letters, ``:5`` starts at 0."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: expected [start:end] or [start:end:step]")
    begin, end = parts[0] or "0", parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not re.fullmatch(r"[0-9]+", step_text) or int(step_text) == 0:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the step must be a positive integer")
    step = int(step_text)
    if re.fullmatch(r"[0-9]+", begin) and re.fullmatch(r"[0-9]+", end):
        return _numeric_range(begin, end, step, spec, pattern)
    letters = string.ascii_letters
    if len(begin) == len(end) == 1 and begin in letters and end in letters:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the start is after the end")
        return list(letters[first : last + 1 : step])
    raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: expected numbers or single letters")


def _numeric_range(begin: str, end: str, step: int, spec: str, pattern: str) -> list[str]:
    # A leading zero fixes the width of every name (web[01:10] -> web01 ... web10).
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise _BadPattern(
            f"invalid range [{spec}] in {pattern!r}: a zero-padded start and end need equal lengths"
        )
    values = range(int(begin), int(end) + 1, step)
    if not values:
        raise _BadPattern(f"invalid range [{spec}] in {pattern!r}: the start is after the end")
    if len(values) > MAX_RANGE_HOSTS:
        raise _BadPattern(f"host pattern {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
    return [str(value).zfill(width) for value in values]


# -- limit patterns -----------------------------------------------------------------

# One term of a colon-separated pattern: no whitespace, ':' or brackets outside [...].
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
# A subscript on a term, as Ansible reads it: web[0], web[-1], web[0:2] (inclusive), web[1:],
# and the deprecated web[1-2]. Not on a ~regex, whose brackets are the regex's own.
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]")
# What Ansible takes for a single address, ranges and a port allowed (then colons do not split).
_NAME_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_NAME_RANGE})(?:[\w-]|{_NAME_RANGE})*(?<![_-])"
_ADDRESS = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?", re.IGNORECASE)
_BRACKETED_ADDRESS = re.compile(r"\[([^\]]+)\](?::[0-9]+)?")


def _split_limit(pattern: str) -> list[str]:
    """Ansible's split of a host pattern into terms (``split_host_pattern``).

    Commas always separate. Without a comma, a pattern that is one address (a host name, an
    IPv4 or IPv6 address, with ``[x:y]`` ranges and a ``:port`` allowed) is one term; any
    other is split at colons outside ``[...]``. Any other term that holds a colon (an IPv6
    address among other terms, a regex with ':') needs commas, as in Ansible.
    """
    if "," in pattern:
        terms = pattern.split(",")
    elif _is_address(pattern.strip()):
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
    return [term.strip() for term in terms if term.strip()]


def _is_address(text: str) -> bool:
    bracketed = _BRACKETED_ADDRESS.fullmatch(text)
    if bracketed:
        return _is_ipv6(bracketed.group(1))
    return _is_ipv6(text) or _ADDRESS.fullmatch(text) is not None


def _read_limit_files(terms: list[str], pattern: str) -> list[str]:
    """``@FILE`` terms replaced by the patterns of FILE, one a line, as Ansible reads them."""
    read: list[str] = []
    for term in terms:
        if not term.startswith("@"):
            read.append(term)
            continue
        path = term[1:]
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read(1024 * 1024)
        except IsADirectoryError:
            raise NodeSourceError(
                f"{setting('limit')} {pattern!r}: {path} is a directory, not a file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise NodeSourceError(
                f"{setting('limit')} {pattern!r}: cannot read the limit file {path}: {exc}"
            ) from None
        read += [line.strip() for line in text.split("\n") if line.strip()]
    return read


def _order_terms(terms: list[str]) -> list[str]:
    """Plain terms (``all`` if none), then ``&`` terms, then ``!`` terms, as Ansible."""
    plain = [term for term in terms if term[0] not in "&!"] or ["all"]
    return plain + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]


def _split_subscript(term: str) -> tuple[str, tuple[int, int | None] | None]:
    """The expression and its subscript, ``(start, end)`` (inclusive; end None: one host)."""
    match = None if term.startswith("~") else _SUBSCRIPT.fullmatch(term)
    if not match:
        return term, None
    expr, index, start, _, end = match.groups()
    if index is not None:
        return expr, (int(index), None)
    return expr, (int(start), int(end) if end else -1)


def _apply_subscript(hosts: list[str], subscript: tuple[int, int | None] | None) -> list[str]:
    """Ansible's ``_apply_subscript``, its quirks included (``[2:0]`` is ``[2]``).

    Raises:
        IndexError: a single index out of range.
    """
    if not hosts or subscript is None:
        return hosts
    start, end = subscript
    if end:
        end = len(hosts) - 1 if end == -1 else end
        return hosts[start : end + 1]
    return [hosts[start]]


def _is_wildcard(expr: str) -> bool:
    return expr.startswith("~") or any(c in expr for c in "*?[")


def _term_regex(expr: str, pattern: str) -> re.Pattern[str]:
    """``~regex`` (matched from the start, as Ansible), else a shell wildcard."""
    try:
        return re.compile(expr[1:] if expr.startswith("~") else fnmatch.translate(expr))
    except (re.error, OverflowError, RecursionError) as exc:
        raise NodeSourceError(f"{setting('limit')} {pattern!r}: invalid term {expr!r} ({exc})") from None


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known[:10_000], n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _sample(names: list[str], count: int = 5) -> str:
    more = len(names) - count
    return ", ".join(names[:count]) + (f" and {more} more" if more > 0 else "")
