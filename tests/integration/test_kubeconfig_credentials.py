"""Kubeconfig credentials go where kubectl sends them, and nowhere else.

Against the stand-in API server (tests/fakes/kube_api.py), which records what each request
carried. What kubectl does was checked with kubectl 1.32 against the same stand-in: no
credentials to an ``http://`` server, a user's relative paths against its own file,
``tokenFile`` over ``token``, a failing exec plugin stops the command before any request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

from nodeload.errors import NodeSourceError
from nodeload.nodes.kubernetes import KubeSelection, kube_nodes
from nodeload.transports.agent import AgentTransport
from nodeload.transports.kube_exec import ApiEndpoint
from tests.fakes.kube_agent import AgentPod, AgentPods
from tests.fakes.kube_api import FakeKubeApi, node
from tests.helpers.oci import write_layout

pytestmark = pytest.mark.integration

CLUSTER = [node("worker-1", internal_ip="10.0.1.1")]
EXEC_V1 = "client.authentication.k8s.io/v1"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's kubeconfig nor a proxy may leak into a test."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(CLUSTER) as server:
        yield server


@pytest.fixture()
def proxy() -> Iterator[FakeKubeApi]:
    """The cluster over plain HTTP, as ``kubectl proxy`` serves it (with credentials of its own)."""
    with FakeKubeApi(CLUSTER, plain_http=True, anonymous="proxy") as server:
        yield server


def write_config(
    path: Path,
    *,
    clusters: Mapping[str, Mapping[str, Any]] = {},
    users: Mapping[str, Mapping[str, Any]] = {},
    contexts: Mapping[str, Mapping[str, Any]] = {},
    current: str | None = None,
) -> Path:
    """A kubeconfig file with these entries, by name."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": dict(c)} for name, c in clusters.items()],
        "users": [{"name": name, "user": dict(u)} for name, u in users.items()],
        "contexts": [{"name": name, "context": dict(c)} for name, c in contexts.items()],
    }
    if current:
        config["current-context"] = current
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one_context(path: Path, server: FakeKubeApi, user: Mapping[str, Any], **cluster: Any) -> Path:
    """A kubeconfig whose context dev has ``server`` (its CA embedded) and user alice."""
    ca = {"certificate-authority-data": _b64(server.ca.cert_pem)} if not server.plain_http else {}
    return write_config(
        path,
        clusters={"c": {"server": server.url, **ca, **cluster}},
        users={"alice": user},
        contexts={"dev": {"cluster": "c", "user": "alice"}},
        current="dev",
    )


def write_plugin(
    path: Path,
    *,
    token: str | None = None,
    cert: tuple[bytes, bytes] | None = None,
    fail: str | None = None,
) -> Path:
    """An exec credential plugin printing ``token``/``cert``, or failing with ``fail`` on stderr.

    Each run is recorded in ``<path>.ran``, with the ExecCredential request it was given.
    """
    status: dict[str, str] = {}
    if token:
        status["token"] = token
    if cert:
        status["clientCertificateData"], status["clientKeyData"] = cert[0].decode(), cert[1].decode()
    answer = json.dumps({"apiVersion": EXEC_V1, "kind": "ExecCredential", "status": status})
    end = f"echo '{fail}' >&2\nexit 3\n" if fail else f"cat <<'JSON'\n{answer}\nJSON\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$KUBERNETES_EXEC_INFO" >> {path}.ran\n{end}')
    path.chmod(0o755)
    return path


def runs(plugin: Path) -> list[dict[str, Any]]:
    """The ExecCredential requests ``plugin`` was run with."""
    ran = Path(f"{plugin}.ran")
    return [json.loads(line) for line in ran.read_text().splitlines()] if ran.exists() else []


def exec_user(command: str, **more: Any) -> dict[str, Any]:
    return {"exec": {"apiVersion": EXEC_V1, "command": command, "interactiveMode": "Never", **more}}


def listed(config: Path, **selection: Any) -> list[str]:
    return [spec.name for spec in kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True, **selection))]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- 1. nothing to a plain http:// server ----------------------------------------------------


@pytest.mark.parametrize("kind", ["token", "tokenFile", "basic", "exec"])
def test_no_credentials_go_to_a_plain_http_server(proxy: FakeKubeApi, tmp_path: Path, kind: str) -> None:
    (tmp_path / "token").write_text(proxy.add_token("alice"))
    plugin = write_plugin(tmp_path / "plugin", token=proxy.add_token("alice"))
    user = {
        "token": {"token": proxy.add_token("alice")},
        "tokenFile": {"tokenFile": "token"},
        "basic": {"username": "alice", "password": "s3cret"},
        "exec": exec_user(str(plugin)),
    }[kind]
    config = one_context(tmp_path / "config", proxy, user)
    assert listed(config) == ["worker-1"]
    assert [(r.path, r.authorization, r.user) for r in proxy.requests] == [("/api/v1/nodes", None, "proxy")]
    assert runs(plugin) == []  # kubectl does not run it either


def test_a_plain_http_server_wanting_credentials_is_told_why_none_came(tmp_path: Path) -> None:
    with FakeKubeApi(CLUSTER, plain_http=True) as server:
        config = one_context(tmp_path / "config", server, {"token": server.add_token("alice")})
        with pytest.raises(NodeSourceError) as err:
            listed(config)
    assert str(err.value) == (
        f"the API server {server.url} answered 401 Unauthorized: like kubectl, nodeload sends no "
        "credentials (those of user 'alice', context 'dev') to a server that is not https://"
    )
    assert [r.authorization for r in server.requests] == [None]


def test_the_agent_path_sends_no_credentials_to_a_plain_http_server(tmp_path: Path) -> None:
    server = FakeKubeApi(CLUSTER, plain_http=True, anonymous="proxy")
    AgentPods(server).add(AgentPod("nodeload-agent-x7k2", "worker-1", ["sh", "-c"]))
    with server:
        config = one_context(tmp_path / "config", server, {"token": server.add_token("alice")})
        [spec] = kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True, reach="agent"))

        async def run() -> tuple[bytes, int]:
            async with AgentTransport(spec) as transport:
                process = await transport.executor().start_argv(["echo", "through the agent"])
                out = await process.stdout.read()
                return out, (await process.wait()).status

        assert asyncio.run(run()) == (b"through the agent\n", 0)
    paths = [r.path for r in server.requests]
    assert paths == [
        "/api/v1/nodes",
        "/api/v1/namespaces/nodeload/pods",
        "/api/v1/namespaces/nodeload/pods/nodeload-agent-x7k2/exec",
    ]
    assert {(r.authorization, r.user) for r in server.requests} == {(None, "proxy")}


def test_the_exec_endpoint_keeps_credentials_from_plain_http() -> None:
    configuration = kube_client.Configuration(
        host="http://127.0.0.1:8001", api_key={"BearerToken": "Bearer t"}
    )
    assert ApiEndpoint.from_configuration(configuration).headers == {}
    configuration.host = "https://127.0.0.1:6443"
    assert ApiEndpoint.from_configuration(configuration).headers == {"Authorization": "Bearer t"}


# -- 2. relative paths against the file that defines the entry ----------------------------------


def credential_files(directory: Path, kind: str, server: FakeKubeApi, who: str) -> dict[str, Any]:
    """Files in ``directory`` that authenticate as ``who``, and a user entry naming them relatively."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "client-certificate":
        cert, key = server.ca.issue(who)
        (directory / "user.crt").write_bytes(cert)
        (directory / "user.key").write_bytes(key)
        return {"client-certificate": "user.crt", "client-key": "user.key"}
    if kind == "tokenFile":
        (directory / "token").write_text(server.add_token(who))
        return {"tokenFile": "token"}
    write_plugin(directory / "bin" / "plugin", token=server.add_token(who))
    return exec_user("./bin/plugin")


@pytest.mark.parametrize("kind", ["client-certificate", "tokenFile", "exec"])
def test_a_users_relative_paths_resolve_against_the_file_defining_the_user(
    api: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "ca.crt").parent.mkdir(parents=True)
    (first / "ca.crt").write_bytes(api.ca.cert_pem)
    credential_files(first, kind, api, "mallory")  # decoys next to the cluster's file
    user = credential_files(second, kind, api, "alice")
    a = write_config(
        first / "config",
        clusters={"c": {"server": api.url, "certificate-authority": "ca.crt"}},
        contexts={"dev": {"cluster": "c", "user": "alice"}},
        current="dev",
    )
    b = write_config(second / "config", users={"alice": user})
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    monkeypatch.chdir(tmp_path)  # neither file's directory
    assert [spec.name for spec in kube_nodes(KubeSelection(all_nodes=True))] == ["worker-1"]
    assert [r.user for r in api.requests] == ["alice"]


def test_a_clusters_certificate_authority_resolves_against_the_file_defining_the_cluster(
    api: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    second.mkdir()
    (second / "ca.crt").write_bytes(api.ca.cert_pem)
    a = write_config(
        first / "config",
        users={"alice": {"token": api.add_token("alice")}},
        contexts={"dev": {"cluster": "c", "user": "alice"}},
        current="dev",
    )
    (first / "ca.crt").write_bytes(FakeKubeApi().ca.cert_pem)  # a decoy next to the user's file
    b = write_config(
        second / "config", clusters={"c": {"server": api.url, "certificate-authority": "ca.crt"}}
    )
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    monkeypatch.chdir(tmp_path)
    assert [spec.name for spec in kube_nodes(KubeSelection(all_nodes=True))] == ["worker-1"]
    assert [r.user for r in api.requests] == ["alice"]


# -- 3. exec credential plugins ------------------------------------------------------------------


def test_a_failing_exec_plugin_stops_with_its_message(api: FakeKubeApi, tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "sso-plugin", fail="session expired: run corp-sso login")
    config = one_context(tmp_path / "config", api, exec_user(str(plugin)))
    with pytest.raises(NodeSourceError) as err:
        listed(config)
    assert str(err.value) == (
        f"kubeconfig {config}, context 'dev', user 'alice': its exec plugin {plugin} failed with "
        "exit code 3: session expired: run corp-sso login"
    )
    assert api.requests == []  # nothing sent without credentials


def test_a_missing_exec_plugin_shows_its_install_hint(api: FakeKubeApi, tmp_path: Path) -> None:
    user = exec_user("no-such-sso-plugin", installHint="install it with: brew install sso-plugin")
    config = one_context(tmp_path / "config", api, user)
    with pytest.raises(NodeSourceError) as err:
        listed(config)
    assert str(err.value) == (
        f"kubeconfig {config}, context 'dev', user 'alice': cannot run its exec plugin no-such-sso-plugin: "
        "No such file or directory; install it with: brew install sso-plugin"
    )
    assert api.requests == []


@pytest.mark.parametrize("kind", ["token", "certificate"])
def test_exec_plugin_credentials_authenticate(api: FakeKubeApi, tmp_path: Path, kind: str) -> None:
    if kind == "token":
        plugin = write_plugin(tmp_path / "plugin", token=api.add_token("alice"))
    else:
        plugin = write_plugin(tmp_path / "plugin", cert=api.ca.issue("alice"))
    user = exec_user(str(plugin), provideClusterInfo=True, env=[{"name": "SSO_PROFILE", "value": "dev"}])
    config = one_context(tmp_path / "config", api, user)
    assert listed(config) == ["worker-1"]
    assert [r.user for r in api.requests] == ["alice"]
    [request] = runs(plugin)
    assert request["apiVersion"] == EXEC_V1 and request["kind"] == "ExecCredential"
    assert request["spec"]["interactive"] is False
    assert request["spec"]["cluster"]["server"] == api.url
    assert request["spec"]["cluster"]["certificate-authority-data"] == _b64(api.ca.cert_pem)


def test_exec_plugin_is_not_run_when_the_user_has_a_client_certificate(
    api: FakeKubeApi, tmp_path: Path
) -> None:
    plugin = write_plugin(tmp_path / "plugin", token=api.add_token("mallory"))
    cert, key = api.ca.issue("alice")
    user = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key), **exec_user(str(plugin))}
    config = one_context(tmp_path / "config", api, user)
    assert listed(config) == ["worker-1"]
    assert [(r.user, r.authorization) for r in api.requests] == [("alice", None)]
    assert runs(plugin) == []


# -- 4. tokens ---------------------------------------------------------------------------------


def test_token_file_wins_over_token(api: FakeKubeApi, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(api.add_token("bob"))
    config = one_context(tmp_path / "config", api, {"token": api.add_token("alice"), "tokenFile": "token"})
    assert listed(config) == ["worker-1"]
    assert [r.user for r in api.requests] == ["bob"]


def test_a_token_file_ending_with_a_newline_works_from_the_cli(api: FakeKubeApi, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(api.add_token("alice") + "\n")  # as `echo $TOKEN > token` writes it
    config = one_context(tmp_path / "config", api, {"tokenFile": "token"})
    source = write_layout(tmp_path / "layout", ref="v1", name="example.com/creds:v1")
    args = ["push", f"oci:{source.path}:v1", "--all-nodes", "--kubeconfig", str(config), "--reach", "agent"]
    done = subprocess.run(
        [sys.executable, "-m", "nodeload", *args, "--json"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "internal error" not in done.stderr
    # Listed as alice; the node then fails alone (the stand-in runs no agent pods).
    assert [r.user for r in api.requests if r.path == "/api/v1/nodes"] == ["alice"]
    [result] = json.loads(done.stdout)["nodes"]
    assert (result["node"], result["status"]) == ("worker-1", "failed")


def test_a_token_that_is_not_one_line_is_named(api: FakeKubeApi, tmp_path: Path) -> None:
    config = one_context(tmp_path / "config", api, {"token": api.add_token("alice") + "\nx"})
    with pytest.raises(NodeSourceError) as err:
        listed(config)
    assert str(err.value) == (
        f"kubeconfig {config}, context 'dev', user 'alice': the token is not one line of printable ASCII"
    )
    assert api.requests == []
