"""Making text from images and nodes safe to print on a terminal."""

from __future__ import annotations

import unicodedata

# Format characters that reorder or hide text (bidi overrides, zero-width joiners...).
_HIDING = {"Cc", "Cf", "Cs", "Co", "Cn"}


def printable(text: str) -> str:
    """``text`` with control and format characters replaced by ``?``.

    Names, annotations and error messages can come from an archive or a node
    the user does not control: an escape sequence in them could rewrite the
    terminal (move the cursor, hide a line, change the title) and a bidi
    override could make a name read as another. Newlines and tabs survive.
    """
    if text.isprintable():
        return text
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in _HIDING else "?" for c in text)
