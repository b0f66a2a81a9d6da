"""Finding registry credentials where Docker and skopeo keep them; WWW-Authenticate challenges."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from nodeload.errors import SourceError
from nodeload.sources.registry_auth import (
    Challenge,
    Credentials,
    find_credentials,
    normalize_key,
    parse_challenge,
)
from tests.helpers.registry import auth_entry, isolate_auth, write_auth_file


@pytest.fixture()
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_auth(monkeypatch, tmp_path / "home")


def docker_config(home: Path) -> Path:
    return home / ".docker" / "config.json"


@pytest.mark.parametrize(
    ("header", "challenge"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/alpine:pull",
                },
            ),
        ),
        ('Basic realm="my \\"quoted\\" realm"', Challenge("basic", {"realm": 'my "quoted" realm'})),
        (
            "bearer Realm=https://r/token , Service=reg",
            Challenge("bearer", {"realm": "https://r/token", "service": "reg"}),
        ),
        ("Basic", Challenge("basic", {})),
    ],
)
def test_parse_challenge(header: str, challenge: Challenge) -> None:
    assert parse_challenge(header) == challenge


@pytest.mark.parametrize("header", ["", "   ", '="x"'])
def test_no_challenge(header: str) -> None:
    assert parse_challenge(header) is None


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("http://localhost:5000", "localhost:5000"),
        ("https://ghcr.io/v2/", "ghcr.io"),
        ("quay.io/team", "quay.io/team"),  # a repository-scoped entry (containers-auth.json)
    ],
)
def test_normalize_key(key: str, normalized: str) -> None:
    assert normalize_key(key) == normalized


def test_docker_login_entry(home: Path) -> None:
    config = write_auth_file(docker_config(home), {"ghcr.io": auth_entry("bob", "s3:cret")})
    found = find_credentials("ghcr.io", "me/app").credentials
    assert found == Credentials("bob", "s3:cret", "", f"auths['ghcr.io'] in {config}")
    assert "user 'bob'" in found.describe() and "s3:cret" not in found.describe()
    assert "s3:cret" not in repr(found)


def test_username_password_and_identity_token_entries(home: Path) -> None:
    write_auth_file(
        docker_config(home),
        {"reg.example": {"username": "ann", "password": "pw"}, "tok.example": {"identitytoken": "refresh"}},
    )
    assert find_credentials("reg.example", "a").credentials == Credentials(
        "ann", "pw", "", f"auths['reg.example'] in {docker_config(home)}"
    )
    token = find_credentials("tok.example", "a").credentials
    assert token is not None and token.identity_token == "refresh"
    assert "an identity token" in token.describe()


def test_docker_hub_is_found_under_dockers_own_key(home: Path) -> None:
    write_auth_file(docker_config(home), {"https://index.docker.io/v1/": auth_entry("hubuser", "pw")})
    found = find_credentials("docker.io", "library/alpine").credentials
    assert found is not None and found.username == "hubuser"


def test_docker_config_variable(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_auth_file(docker_config(home), {"reg.example": auth_entry("home", "pw")})
    write_auth_file(tmp_path / "elsewhere" / "config.json", {"reg.example": auth_entry("env", "pw")})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    found = find_credentials("reg.example", "a").credentials
    assert found is not None and found.username == "env"


def test_skopeo_files_come_first(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_auth_file(docker_config(home), {"reg.example": auth_entry("docker", "pw")})
    runtime = write_auth_file(
        tmp_path / "run" / "containers" / "auth.json", {"reg.example": auth_entry("xdg", "pw")}
    )
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert find_credentials("reg.example", "a").credentials.username == "xdg"  # type: ignore[union-attr]
    chosen = write_auth_file(tmp_path / "chosen.json", {"reg.example": auth_entry("chosen", "pw")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(chosen))
    lookup = find_credentials("reg.example", "a")
    assert lookup.credentials is not None and lookup.credentials.username == "chosen"
    assert str(runtime) not in lookup.searched  # REGISTRY_AUTH_FILE replaces the runtime file
    # A file without an entry for the registry passes the question on.
    assert find_credentials("other.example", "a").searched == (str(chosen), str(docker_config(home)))


def test_the_most_specific_entry_wins(home: Path) -> None:
    write_auth_file(
        docker_config(home),
        {
            "quay.io": auth_entry("registry-wide", "pw"),
            "quay.io/team": auth_entry("team", "pw"),
            "quay.io/team/app": auth_entry("app", "pw"),
        },
    )
    users = [find_credentials("quay.io", repo).credentials for repo in ("team/app", "team/other", "x/y")]
    assert [u.username if u else None for u in users] == ["app", "team", "registry-wide"]


def test_nothing_found_says_where_it_looked(home: Path) -> None:
    lookup = find_credentials("reg.example", "a")
    assert lookup.credentials is None
    assert lookup.describe() == "no credentials (looked in: no auth file exists)"
    write_auth_file(docker_config(home), {"elsewhere.example": auth_entry("x", "y")})
    assert str(docker_config(home)) in find_credentials("reg.example", "a").describe()


def _helper(bin_dir: Path, name: str, body: str) -> None:
    """A docker-credential-NAME that logs the server it is asked about."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\nread server\necho "$server" >>{bin_dir}/asked\n{body}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture()
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    answer = json.dumps({"ServerURL": "x", "Username": "helped", "Secret": "from-helper"})
    _helper(bin_dir, "good", f"echo '{answer}'")
    _helper(bin_dir, "token", """echo '{"Username": "<token>", "Secret": "refresh-me"}'""")
    _helper(bin_dir, "empty", "echo 'credentials not found in native keychain'; exit 1")
    _helper(bin_dir, "broken", "echo 'the keychain is locked' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def test_cred_helpers_and_creds_store(home: Path, helpers: Path) -> None:
    write_auth_file(
        docker_config(home),
        {"stored.example": {}},  # as docker login leaves it next to a credsStore
        credHelpers={"helped.example": "good", "https://index.docker.io/v1/": "token"},
        credsStore="empty",
    )
    helped = find_credentials("helped.example", "a").credentials
    assert helped is not None and (helped.username, helped.password) == ("helped", "from-helper")
    assert "docker-credential-good" in helped.origin
    hub = find_credentials("docker.io", "library/alpine").credentials
    assert hub is not None and hub.identity_token == "refresh-me"
    assert find_credentials("stored.example", "a").credentials is None  # the store knows nothing
    assert (helpers / "asked").read_text().split() == [
        "helped.example",
        "https://index.docker.io/v1/",
        "stored.example",
    ]


def test_helper_problems_are_noted_not_raised(home: Path, helpers: Path) -> None:
    write_auth_file(docker_config(home), credHelpers={"a.example": "broken", "b.example": "desktop"})
    broken = find_credentials("a.example", "x")
    assert broken.credentials is None and "the keychain is locked" in broken.describe()
    missing = find_credentials("b.example", "x")
    assert "docker-credential-desktop, which is not installed" in missing.describe()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"auths": {"r.example": {"auth": "!!!"}}}', "'auth' is not base64"),
        ('{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}', "'auth' is not base64 of USER:PASSWORD"),
        ('{"auths": {"r.example": "text"}}', "'r.example' must be an object"),
    ],
)
def test_malformed_files_name_themselves(home: Path, content: str, says: str) -> None:
    docker_config(home).parent.mkdir(parents=True)
    docker_config(home).write_text(content)
    with pytest.raises(SourceError, match=says) as caught:
        find_credentials("r.example", "a")
    assert str(docker_config(home)) in str(caught.value)
