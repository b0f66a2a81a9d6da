import pytest

from nodeload.errors import UsageError
from nodeload.reference import normalize, parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("myapp", "docker.io/library/myapp:latest"),
        ("myapp:dev", "docker.io/library/myapp:dev"),
        ("team/app:1.2", "docker.io/team/app:1.2"),
        ("index.docker.io/team/app:1", "docker.io/team/app:1"),
        ("ghcr.io/org/app:v1", "ghcr.io/org/app:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:x", "localhost:5000/app:x"),
        ("registry.local:5000/a/b/c:t", "registry.local:5000/a/b/c:t"),
        ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64),
        ("app:1@sha256:" + "b" * 64, "docker.io/library/app:1@sha256:" + "b" * 64),
    ],
)
def test_normalizes_like_docker(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER:tag",
        "app:bad tag",
        " app",
        "app@sha256:short",
        "a//b",
        "app:",
        "app:d\u0435v",  # Cyrillic "e": a look-alike of app:dev
        "app:v\u0661",  # Arabic-Indic digit one
        "app:v1\nx",
        "app:v1\n@sha256:" + "a" * 64,
        "r\u0435gistry.io/app:v1",
    ],
)
def test_rejects_invalid(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "floats"),
    [("app", True), ("app:latest", True), ("app:dev", False), ("app@sha256:" + "c" * 64, False)],
)
def test_floating_tags_are_detected(text: str, floats: bool) -> None:
    assert parse_reference(text).floats is floats
