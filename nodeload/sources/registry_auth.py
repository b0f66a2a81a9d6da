"""Registry credentials, found where skopeo and Docker keep them, and HTTP auth challenges.

Files are read in skopeo's order, the first that has an answer for the registry wins:

1. ``$REGISTRY_AUTH_FILE``, else ``${XDG_RUNTIME_DIR}/containers/auth.json``;
2. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
3. ``${DOCKER_CONFIG:-~/.docker}/config.json``.

Within a file (all three share Docker's format): ``credHelpers[registry]`` names a
helper; else an ``auths`` entry for the repository or the registry, the most specific key
first (``auth`` is base64 ``user:password``; ``username``/``password``; ``identitytoken``);
else ``credsStore`` names a helper for every registry. A helper is the program
``docker-credential-NAME``, asked with ``get``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nodeload.dockerapi import docker_config_dir
from nodeload.errors import SourceError
from nodeload.jsondoc import Doc, parse

DOCKER_HUB = "docker.io"
# The key Docker writes for Docker Hub, and the server URL its credential helpers know it by.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
# What a credential helper answers for a server it holds nothing for.
_HELPER_NOT_FOUND = "credentials not found"
# The username helpers return when the secret is an identity (refresh) token.
_TOKEN_USER = "<token>"
HELPER_TIMEOUT = 30.0
_MAX_AUTH_FILE = 1 << 20


@dataclass(frozen=True)
class Credentials:
    """What to log in with: a username and password, or an identity (OAuth2 refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    origin: str = ""  # where they were found, for messages

    def describe(self) -> str:
        """``user 'bob' from auths["ghcr.io"] in ~/.docker/config.json``, for messages."""
        who = f"user {self.username!r}" if not self.identity_token else "an identity token"
        return f"{who} from {self.origin}"


@dataclass(frozen=True)
class CredentialLookup:
    """The result of a search: credentials or none, and where nodeload looked."""

    credentials: Credentials | None
    searched: tuple[str, ...]  # files read, in order
    problems: tuple[str, ...] = ()  # helpers that could not be asked

    def describe(self) -> str:
        """What was used, or why nothing was, for error messages."""
        if self.credentials is not None:
            return self.credentials.describe()
        where = ", ".join(self.searched) or "no auth file exists"
        notes = "".join(f"; {p}" for p in self.problems)
        return f"no credentials (looked in: {where}{notes})"


def auth_files() -> list[Path]:
    """The auth files to read, in order (existing or not)."""
    first = os.environ.get("REGISTRY_AUTH_FILE")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files = [Path(first)] if first else []
    if not first and runtime:
        files.append(Path(runtime) / "containers" / "auth.json")
    files.append(Path(config_home) / "containers" / "auth.json")
    files.append(docker_config_dir() / "config.json")
    return files


def find_credentials(registry: str, repository: str) -> CredentialLookup:
    """The credentials for ``registry`` (as written in image names) and ``repository`` in it.

    Raises:
        SourceError: when an auth file exists but is malformed.
    """
    searched: list[str] = []
    problems: list[str] = []
    for path in auth_files():
        doc = _read_auth_file(path)
        if doc is None:
            continue
        searched.append(str(path))
        found = _from_file(doc, str(path), registry, repository, problems)
        if found is not None:
            return CredentialLookup(found, tuple(searched), tuple(problems))
    return CredentialLookup(None, tuple(searched), tuple(problems))


def _read_auth_file(path: Path) -> Doc | None:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_AUTH_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SourceError(f"cannot read the auth file {path}: {exc.strerror or exc}") from exc
    return parse(data, str(path))


def normalize_key(key: str) -> str:
    """An auth file key as a registry (or registry/namespace): URLs lose scheme and path."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    if stripped != key:  # Docker's legacy URL form, e.g. https://index.docker.io/v1/
        stripped = stripped.split("/", 1)[0]
    host, slash, rest = stripped.partition("/")
    return (DOCKER_HUB if host in _HUB_ALIASES else host) + slash + rest


def _scopes(registry: str, repository: str) -> Iterator[str]:
    """``reg/a/b``, ``reg/a``, ``reg``: the keys that may hold credentials, most specific first."""
    parts = repository.split("/")
    for end in range(len(parts), 0, -1):
        yield f"{registry}/{'/'.join(parts[:end])}"
    yield registry


def _from_file(
    doc: Doc, where: str, registry: str, repository: str, problems: list[str]
) -> Credentials | None:
    helpers = {normalize_key(k): v for k, v in doc.text_map("credHelpers").items()}
    if registry in helpers:
        return ask_helper(helpers[registry], registry, f"credHelpers of {where}", problems)
    auths = doc.opt_obj("auths")
    entries = {normalize_key(key): key for key in (auths.raw if auths else {})}
    for scope in _scopes(registry, repository):
        if auths is not None and scope in entries:
            key = entries[scope]
            found = _decode_entry(auths.obj(key), f"auths[{key!r}] in {where}")
            if found is not None:
                return found
    store = doc.text("credsStore")
    return ask_helper(store, registry, f"credsStore of {where}", problems) if store else None


def _decode_entry(entry: Doc, origin: str) -> Credentials | None:
    """An ``auths`` entry; None when it holds nothing (Docker leaves ``{}`` next to a credsStore)."""
    token = entry.text("identitytoken")
    username, password = entry.text("username"), entry.text("password")
    encoded = entry.text("auth")
    if encoded:
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise SourceError(f"{origin}: 'auth' is not base64 of USER:PASSWORD") from None
        if not sep:
            raise SourceError(f"{origin}: 'auth' is not base64 of USER:PASSWORD")
    if not (token or username or password):
        return None
    return Credentials(username, password, token, origin)


def ask_helper(name: str, registry: str, origin: str, problems: list[str]) -> Credentials | None:
    """Run ``docker-credential-NAME get`` for ``registry``.

    A helper that is missing or fails is noted in ``problems`` rather than raised: an
    anonymous pull may still work (configs copied from Docker Desktop name helpers that do
    not exist here).
    """
    program = f"docker-credential-{name}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or shutil.which(program) is None:
        problems.append(f"{origin} names {program}, which is not installed")
        return None
    server = DOCKER_HUB_KEY if registry == DOCKER_HUB else registry
    try:
        done = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        problems.append(f"{program} get failed: {exc}")
        return None
    if done.returncode:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        if _HELPER_NOT_FOUND not in message.lower():
            problems.append(f"{program} get failed: {message[:200]}")
        return None
    answer = parse(done.stdout, f"the answer of {program} get")
    username, secret = answer.text("Username"), answer.text("Secret")
    if username == _TOKEN_USER:
        return Credentials(identity_token=secret, origin=f"{program} ({origin})")
    return Credentials(username, secret, "", f"{program} ({origin})")


# -- WWW-Authenticate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``Bearer realm="...",service="...",scope="..."``."""

    scheme: str  # lowercase: "bearer", "basic"
    params: dict[str, str]


_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s*")
_PARAM = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,\s*|$)')


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header, or None when there is none.

    Parameter names are lowercased; quoted values are unescaped (RFC 9110 quoted-string).
    """
    match = _SCHEME.match(header)
    if not match:
        return None
    params: dict[str, str] = {}
    pos = match.end()
    while param := _PARAM.match(header, pos):
        quoted, plain = param.group(2), param.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
        params[param.group(1).lower()] = value
        pos = param.end()
    return Challenge(match.group(1).lower(), params)
