"""Terminal safety of text that came from sources and nodes."""

from nodeload.text import printable


def test_plain_text_is_untouched() -> None:
    assert printable("docker.io/library/app:v1 — ok\n\tnext") == "docker.io/library/app:v1 — ok\n\tnext"


def test_escape_sequences_and_bidi_overrides_are_neutralised() -> None:
    shown = printable("name\x1b]0;title\x07\x1b[2J\u202egnp.exe\x9b31m")
    assert not any(c in shown for c in "\x1b\x07\u202e\x9b")
    assert shown.startswith("name?]0;title??[2J?gnp.exe?31m")
