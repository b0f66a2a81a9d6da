"""Image references, normalized the way Docker and CRI do (docker.io/library/x:tag)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nodeload.errors import UsageError

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAINS = {"index.docker.io", "registry-1.docker.io"}
# The distribution spec's grammar, ASCII only: look-alike letters from other scripts are not a
# tag, and every pattern must match the whole text (fullmatch: "$" would accept a trailing newline).
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def tag_was_implied(self) -> bool:
        """True when neither a tag nor a digest was written."""
        return self.tag is None and self.digest is None

    def normalized(self) -> str:
        """Fully qualified name; ``:latest`` is added when nothing pins the image."""
        name = f"{self.domain}/{self.path}"
        if self.tag_was_implied:
            return f"{name}:latest"
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name

    @property
    def floats(self) -> bool:
        """True for ``:latest`` or no tag: kubelet then pulls with policy Always."""
        return self.digest is None and self.tag in (None, "latest")

    def __str__(self) -> str:
        return self.normalized()


def parse_reference(text: str) -> Reference:
    """Parse and normalize an image reference like ``myapp:dev``.

    Raises:
        UsageError: when ``text`` is not a valid reference.
    """
    original = text
    if not text or text != text.strip():
        raise UsageError(f"invalid image reference {original!r}")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise UsageError(f"invalid image reference {original!r}: bad digest {digest!r}")
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise UsageError(f"invalid image reference {original!r}: bad tag {tag!r}")
    domain, _, rest = text.partition("/")
    if not rest or not ("." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")):
        domain, rest = DEFAULT_DOMAIN, text
    elif not _DOMAIN.fullmatch(domain):
        raise UsageError(f"invalid image reference {original!r}: bad registry {domain!r}")
    if domain in _LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = f"library/{rest}"
    if not rest or not all(_PATH_COMPONENT.fullmatch(p) for p in rest.split("/")):
        raise UsageError(
            f"invalid image reference {original!r}: repository names are lowercase "
            "letters, digits and separators (. _ -)"
        )
    return Reference(domain=domain, path=rest, tag=tag, digest=digest)


def normalize(text: str) -> str:
    """Shorthand for ``parse_reference(text).normalized()``."""
    return parse_reference(text).normalized()
