"""nodeload's reading of kubeconfig files against kubectl's, on a corpus of kubeconfig sets.

Each set is one or more files (``$KUBECONFIG``, merged, or ``--kubeconfig``) and perhaps a
``--context``. kubectl answers with ``kubectl get --raw /version`` against servers on closed
loopback ports: either it refuses the configuration (its validation, before any request), or it
tries a server, which its "connection refused" names; ``kubectl config view --minify`` names the
context and user. nodeload must refuse the same sets and, for the others, pick the same context,
server and user. Deliberate differences are listed in ``DELIBERATE`` and asserted.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeload.errors import NodeSourceError
from nodeload.nodes import kubernetes as kube
from nodeload.nodes.kubernetes import KubeSelection

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (Debian's kubernetes-client)"),
]

DELIBERATE = {
    "no-context": "without a usable context (none set, or one naming an undefined cluster), kubectl falls "
    "back to http://localhost:8080; nodeload asks which cluster is meant instead of guessing one",
}


def _certificate() -> bytes:
    """A self-signed certificate: kubectl parses a certificate authority when it loads it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodeload-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.PEM)


PEM = _certificate()
PEM_DATA = base64.b64encode(PEM).decode()


def server(port: int, scheme: str = "https") -> str:
    """A loopback server nothing listens on (ports below 100 are not in use here)."""
    return f"{scheme}://127.0.0.1:{port}"


def config(
    contexts: dict[str, dict[str, Any]] | None = None,
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    current: str | None = None,
    **extra: Any,
) -> str:
    document: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", **extra}
    if current is not None:
        document["current-context"] = current
    for key, inner, entries in (("contexts", "context", contexts), ("clusters", "cluster", clusters),
                                ("users", "user", users)):  # fmt: skip
        if entries is not None:
            document[key] = [{"name": name, inner: body} for name, body in entries.items()]
    return yaml.safe_dump(document, sort_keys=False)


def simple(port: int = 11, user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None) -> str:
    return config(
        {"c1": {"cluster": "k1", "user": "u1"}},
        {"k1": {"server": server(port), **(cluster or {})}},
        {"u1": user if user is not None else {"token": "abc"}},
        current="c1",
    )


@dataclass(frozen=True)
class KubeCase:
    """Files in ``$KUBECONFIG`` order (None: a file that does not exist), or one ``--kubeconfig``."""

    name: str
    files: tuple[str | None, ...]
    context: str | None = None
    explicit: bool = False
    extra_files: dict[str, bytes] = field(default_factory=dict)
    deliberate: str | None = None


TWO_CONTEXTS = config(
    {"a": {"cluster": "ka", "user": "ua"}, "b": {"cluster": "kb", "user": "ub", "namespace": "team-b"}},
    {"ka": {"server": server(21)}, "kb": {"server": server(22)}},
    {"ua": {"token": "a"}, "ub": {"token": "b"}},
    current="a",
)

CORPUS = [
    KubeCase("single-file", (simple(),)),
    KubeCase("explicit-file", (simple(12),), explicit=True),
    KubeCase("context-flag", (TWO_CONTEXTS,), context="b"),
    KubeCase("current-context", (TWO_CONTEXTS,)),
    KubeCase("unknown-context", (TWO_CONTEXTS,), context="nope"),
    KubeCase("namespace-is-ignored", (TWO_CONTEXTS.replace("current-context: a", "current-context: b"),)),
    KubeCase(
        "first-file-defines-the-context",
        (simple(31), simple(32).replace("u1", "u2")),
    ),
    KubeCase(
        "first-current-context-wins",
        (TWO_CONTEXTS, TWO_CONTEXTS.replace("current-context: a", "current-context: b")),
    ),
    KubeCase(
        "current-context-from-a-later-file",
        (
            TWO_CONTEXTS.replace("current-context: a\n", ""),
            TWO_CONTEXTS.replace("current-context: a", "current-context: b"),
        ),
    ),
    KubeCase(
        "cluster-from-the-first-file-that-defines-it",
        (
            config({"c1": {"cluster": "k1", "user": "u1"}}, current="c1"),
            config(clusters={"k1": {"server": server(41)}}),
            config(clusters={"k1": {"server": server(42)}}),
            config(users={"u1": {"token": "t"}}),
        ),
    ),
    KubeCase("missing-file-skipped", (None, simple(13))),
    KubeCase("empty-file-ignored", ("", simple(14))),
    KubeCase("comment-only-file-ignored", ("# nothing here\n", simple(15))),
    KubeCase("only-an-empty-file", ("",), deliberate="no-context"),
    KubeCase(
        "no-current-context", (TWO_CONTEXTS.replace("current-context: a\n", ""),), deliberate="no-context"
    ),
    KubeCase(
        "both-ca-and-ca-data",
        (simple(cluster={"certificate-authority": "ca.crt", "certificate-authority-data": PEM_DATA}),),
        extra_files={"ca.crt": PEM},
    ),
    KubeCase(
        "ca-file-relative-to-the-kubeconfig",
        (simple(cluster={"certificate-authority": "ca.crt"}),),
        extra_files={"ca.crt": PEM},
    ),
    KubeCase("missing-ca-file", (simple(cluster={"certificate-authority": "nope.crt"}),)),
    KubeCase(
        "insecure-with-a-ca",
        (simple(cluster={"insecure-skip-tls-verify": True, "certificate-authority-data": PEM_DATA}),),
    ),
    KubeCase("insecure-alone", (simple(cluster={"insecure-skip-tls-verify": True}),)),
    KubeCase(
        "both-client-certificate-and-data",
        (
            simple(
                user={
                    "client-certificate": "c.crt",
                    "client-certificate-data": PEM_DATA,
                    "client-key-data": PEM_DATA,
                }
            ),
        ),
        extra_files={"c.crt": PEM},
    ),
    KubeCase(
        "both-client-key-and-data",
        (
            simple(
                user={"client-certificate-data": PEM_DATA, "client-key": "c.key", "client-key-data": PEM_DATA}
            ),
        ),
        extra_files={"c.key": PEM},
    ),
    KubeCase("client-certificate-without-key", (simple(user={"client-certificate-data": PEM_DATA}),)),
    KubeCase("token-and-basic-auth", (simple(user={"token": "t", "username": "a", "password": "b"}),)),
    KubeCase(
        "token-and-token-file",
        (simple(user={"token": "t", "tokenFile": "tok"}),),
        extra_files={"tok": b"x\n"},
    ),
    KubeCase(
        "exec-and-auth-provider",
        (
            simple(
                user={
                    "exec": {"command": "true", "apiVersion": "client.authentication.k8s.io/v1"},
                    "auth-provider": {"name": "oidc"},
                }
            ),
        ),
    ),
    # Plain HTTP: over https, kubectl would prompt for a login (stdin: none).
    KubeCase(
        "user-not-defined",
        (
            config(
                {"c1": {"cluster": "k1", "user": "ghost"}},
                {"k1": {"server": server(16, "http")}},
                current="c1",
            ),
        ),
    ),
    KubeCase(
        "no-user-at-all",
        (config({"c1": {"cluster": "k1"}}, {"k1": {"server": server(17, "http")}}, current="c1"),),
    ),
    KubeCase("plain-http-server", (simple(cluster={"server": server(18, "http")}),)),
    KubeCase(
        "context-names-an-undefined-cluster",
        (config({"c1": {"cluster": "gone", "user": "u1"}}, current="c1"),),
        deliberate="no-context",
    ),
    KubeCase(
        "duplicate-names-in-one-file",
        (
            config({"c1": {"cluster": "k1"}}, current="c1").rstrip()
            + "\nclusters:\n- name: k1\n  cluster: {server: 'https://127.0.0.1:51'}\n"
            "- name: k1\n  cluster: {server: 'https://127.0.0.1:52'}\n",
        ),
    ),
    KubeCase("preferences-and-extensions", (simple(19) + "preferences: {colors: true}\nextensions: []\n",)),
]


@dataclass(frozen=True)
class Answer:
    """What a tool made of a kubeconfig set: refused (why), or context, server and user."""

    refused: str | None = None
    context: str | None = None
    server: str | None = None
    user: str | None = None


def _files(directory: Path, case: KubeCase) -> list[Path]:
    for name, data in case.extra_files.items():
        (directory / name).write_bytes(data)
    paths = []
    for index, text in enumerate(case.files):
        path = directory / f"config-{index}"
        if text is not None:
            path.write_text(text)
        paths.append(path)
    return paths


def _kubectl(directory: Path, case: KubeCase, paths: list[Path]) -> Answer:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(directory / "home")}
    flags = ["--kubeconfig", str(paths[0])] if case.explicit else []
    if not case.explicit:
        env["KUBECONFIG"] = ":".join(str(p) for p in paths)
    flags += ["--context", case.context] if case.context else []

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args, *flags], env=env, capture_output=True, text=True, timeout=60, cwd=directory
        )

    tried = kubectl("get", "--raw", "/version", "--request-timeout=2s")
    reached = re.search(r"(127\.0\.0\.1|localhost):(\d+)", tried.stderr)
    said = tried.stderr.strip()
    if reached is None or "refused" not in said:
        return Answer(refused=said or "refused")
    merged = json.loads(kubectl("config", "view", "-o", "json").stdout)  # kubectl's merge of the files
    name = case.context or merged.get("current-context")
    context = next((c.get("context") or {} for c in merged.get("contexts") or () if c["name"] == name), {})
    return Answer(
        context=name, server=f"{reached.group(1)}:{reached.group(2)}", user=context.get("user") or None
    )


def _nodeload(case: KubeCase, paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> Answer:
    if case.explicit:
        selection = KubeSelection(kubeconfig=paths[0], context=case.context, all_nodes=True)
    else:
        monkeypatch.setenv("KUBECONFIG", ":".join(str(p) for p in paths))
        selection = KubeSelection(context=case.context, all_nodes=True)
    try:
        in_use = kube._context_in_use(selection)
        kube._configuration(in_use)  # what the client library is given: the credentials kubectl sends
    except NodeSourceError as exc:
        return Answer(refused=str(exc))
    host = re.sub(r"^\w+://", "", in_use.server)
    user = in_use.user if in_use.user != "(none)" else None
    return Answer(context=in_use.context, server=host, user=user)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_kubeconfig_read_as_kubectl_reads_it(
    case: KubeCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    paths = _files(tmp_path, case)
    theirs = _kubectl(tmp_path, case, paths)
    ours = _nodeload(case, paths, monkeypatch)
    if case.deliberate is not None:
        assert DELIBERATE[case.deliberate]
        assert theirs.server == "localhost:8080" and ours.refused, (theirs, ours)
        return
    if theirs.refused is not None:
        assert ours.refused is not None, f"kubectl refuses ({theirs.refused}), nodeload does not: {ours}"
        return
    assert ours.refused is None, f"nodeload refuses ({ours.refused}), kubectl does not: {theirs}"
    assert ours == theirs
