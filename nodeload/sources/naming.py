"""The name an image gets on the nodes, and whether the user gave it."""

from __future__ import annotations

from nodeload.errors import UsageError
from nodeload.reference import parse_reference
from nodeload.sources import parse_source
from nodeload.sources.base import name_or_none
from nodeload.wording import setting


def name_on_nodes(explicit: str | None, image: str, reference: str | None) -> tuple[str, bool]:
    """The name to create on the nodes, and whether it came from inside the source.

    A name the user wrote (``--name``, or the IMAGE argument itself, as in ``myapp:dev``)
    may replace an existing image; one read from the source's RepoTags or annotations
    may not (see :func:`nodeload.stores.base.check_name`).

    Raises:
        UsageError: the source names no image and no name was given.
    """
    if explicit:
        return parse_reference(explicit).normalized(), False
    if not reference:
        raise UsageError(f"{image} has no name of its own: give the name to create with {setting('name')}")
    name = parse_reference(reference).normalized()
    written = parse_source(image).ref
    return name, not (written and name_or_none(written) == name)
