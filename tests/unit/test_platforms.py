import pytest

from nodeload.errors import UsageError
from nodeload.platforms import Platform, choose_platform


def test_parse_normalizes_aliases_and_variants() -> None:
    assert Platform.parse("linux/x86_64") == Platform("linux", "amd64")
    assert Platform.parse("linux/aarch64") == Platform("linux", "arm64", "v8")
    assert Platform.parse("linux/arm") == Platform("linux", "arm", "v7")
    assert str(Platform.parse("Linux/ARM64/v8")) == "linux/arm64/v8"


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d"])
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(UsageError):
        Platform.parse(text)


def test_choose_exact_match() -> None:
    offered = [Platform("linux", "arm64", "v8"), Platform("linux", "amd64"), Platform("windows", "amd64")]
    assert choose_platform(Platform("linux", "amd64"), offered) == 1
    assert choose_platform(Platform("linux", "arm64"), offered) == 0  # v8 implied on both sides


def test_choose_none_when_absent() -> None:
    assert choose_platform(Platform("linux", "s390x"), [Platform("linux", "amd64")]) is None


def test_arm_falls_back_to_older_variant() -> None:
    offered = [Platform("linux", "arm", "v5"), Platform("linux", "arm", "v6")]
    assert choose_platform(Platform("linux", "arm", "v7"), offered) == 1
    assert choose_platform(Platform("linux", "arm", "v6"), [Platform("linux", "arm", "v7")]) is None
