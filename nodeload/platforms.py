"""OCI platforms: parsing ``os/arch[/variant]`` and matching index entries."""

from __future__ import annotations

from dataclasses import dataclass

from nodeload.errors import UsageError
from nodeload.jsondoc import Doc

# Go's GOARCH names are what images use; accept the uname spellings too.
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
# The variant an architecture implies when none is given (as containerd normalizes).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    """An OCI platform (os, architecture, optional variant)."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` as given on the command line."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
        return cls(*parts).normalized()

    @classmethod
    def from_json(cls, doc: Doc) -> Platform:
        """Read the ``platform`` object of an index entry, or the fields of a config.

        Raises:
            SourceError: when a field is not a string.
        """
        return cls(os=doc.text("os"), architecture=doc.text("architecture"), variant=doc.text("variant"))

    def to_json(self) -> dict[str, str]:
        """The JSON form used inside indexes."""
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out

    def normalized(self) -> Platform:
        """Canonical spelling: Go arch names, implied variants made explicit."""
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANT.get(arch, "")
        if arch == "arm64" and variant == "8":
            variant = "v8"
        return Platform(self.os.lower(), arch, variant)

    def matches(self, other: Platform) -> bool:
        """Whether an image built for ``other`` runs on this platform exactly."""
        return self.normalized() == other.normalized()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _arm_compatible(want: Platform, have: Platform) -> bool:
    """armv7 nodes run v6/v5 images too: a lower variant is an acceptable fallback."""
    if want.architecture != "arm" or have.architecture != "arm":
        return False
    return have.variant < want.variant


def choose_platform(want: Platform, available: list[Platform]) -> int | None:
    """Index of the best entry of ``available`` for ``want``, or None.

    An exact match wins; for 32-bit arm an older variant is the fallback.
    """
    want = want.normalized()
    for i, have in enumerate(available):
        if want.matches(have):
            return i
    fallbacks = [i for i, have in enumerate(available) if _arm_compatible(want, have.normalized())]
    if fallbacks:
        return max(fallbacks, key=lambda i: available[i].normalized().variant)
    return None
