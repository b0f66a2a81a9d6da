"""A kubeconfig user's credentials as kubectl reads and sends them, for the client library.

The official client's loader is used for everything else (TLS, auth providers), but where it
differs from kubectl about credentials, kubectl is followed, because a kubeconfig is written
for kubectl:

* **Relative paths** (a user's ``client-certificate``, ``client-key``, ``tokenFile`` and exec
  ``command`` when it contains a slash; a cluster's ``certificate-authority``) are resolved
  against the directory of the file that defines *that* entry (:func:`resolve_paths`). The
  library resolves a user's certificate against the cluster's file.
* **Plain HTTP gets nothing**: no token, basic auth, client certificate or exec plugin run
  for a server that is not ``https://``.
* **tokenFile wins over token**, and its content is trimmed of surrounding whitespace.
* **An exec plugin is run here**, only when the user has no token, basic auth or client
  certificate (as kubectl), and its failure is an error: the library would log it and send
  the request without credentials.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodeload.errors import NodeSourceError
from nodeload.jsondoc import mapping

_USER_PATHS = ("client-certificate", "client-key", "tokenFile")
_CLUSTER_PATHS = ("certificate-authority",)
_STATIC = ("token", "tokenFile", "username", "client-certificate", "client-certificate-data")
# What an exec plugin is told of the cluster (with its CA and the extension below), as kubectl.
_CLUSTER_INFO = ("server", "tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression")
# The cluster extension whose content an exec plugin gets as spec.cluster.config.
_EXEC_EXTENSION = "client.authentication.k8s.io/exec"


def resolve_paths(config: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``config``, read from ``path``, with its entries' relative file paths made absolute.

    As kubectl: against the absolute directory of ``path``, without expanding ``~``.
    """
    base = Path(os.path.abspath(path)).parent
    resolved = dict(config)
    if config.get("clusters"):
        resolved["clusters"] = [_entry(e, "cluster", _CLUSTER_PATHS, base) for e in config["clusters"]]
    if config.get("users"):
        resolved["users"] = [_entry(e, "user", _USER_PATHS, base) for e in config["users"]]
    return resolved


def _entry(entry: Mapping[str, Any], inner: str, keys: tuple[str, ...], base: Path) -> dict[str, Any]:
    body = entry.get(inner)
    if not isinstance(body, Mapping):
        return dict(entry)
    body = {k: _absolute(v, base) if k in keys else v for k, v in body.items()}
    command = mapping(body.get("exec")).get("command")
    if inner == "user" and isinstance(command, str) and os.sep in command:  # else looked up in $PATH
        body["exec"] = {**body["exec"], "command": _absolute(command, base)}
    return {**entry, inner: body}


def _absolute(value: object, base: Path) -> object:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def credentials(user: Mapping[str, Any], cluster: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The user entry to give the client library for ``cluster``: what kubectl would send.

    None when the server is not ``https://`` (kubectl sends no credentials there). Paths must
    have been resolved (:func:`resolve_paths`); ``where`` names the kubeconfig, context and
    user in messages.

    Raises:
        NodeSourceError: the token file cannot be read, a token is not one line of text, or
            the exec plugin fails.
    """
    if not str(cluster.get("server") or "").startswith("https://"):
        return None
    sent = dict(user)
    if sent.get("tokenFile"):
        sent["token"] = _read_token(str(sent.pop("tokenFile")), where)
    plugin = sent.pop("exec", None)
    if plugin is not None and not any(sent.get(key) for key in _STATIC):
        sent.update(_run_plugin(mapping(plugin), cluster, where))
    if sent.get("token"):
        sent["token"] = _checked_token(str(sent["token"]), where)
    return sent


def _read_token(path: str, where: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise NodeSourceError(f"{where}: cannot read tokenFile {path}: {e}") from e
    if not token:
        raise NodeSourceError(f"{where}: tokenFile {path} is empty")
    return token


def _checked_token(token: str, where: str) -> str:
    """``token``, if it can be an HTTP header value."""
    if not (token.isascii() and token.isprintable()):
        raise NodeSourceError(f"{where}: the token is not one line of printable ASCII")
    return token


# -- exec credential plugins -------------------------------------------------------------------


def _run_plugin(plugin: Mapping[str, Any], cluster: Mapping[str, Any], where: str) -> dict[str, str]:
    """The credentials the exec plugin prints, as kubeconfig user fields."""
    command, api_version = plugin.get("command"), plugin.get("apiVersion")
    if not command or not api_version:
        raise NodeSourceError(f"{where}: its exec plugin needs both command and apiVersion")
    argv = [str(command), *(str(arg) for arg in plugin.get("args") or ())]
    interactive = _interactive(plugin, where)
    env = dict(os.environ)
    env.update({str(mapping(e).get("name")): str(mapping(e).get("value")) for e in plugin.get("env") or ()})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(_exec_info(plugin, cluster, interactive, where))
    try:
        # Interactive: the plugin may prompt, so it gets the terminal (stderr too, as kubectl).
        done = subprocess.run(
            argv,
            env=env,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if interactive else subprocess.PIPE,
            text=True,
            check=False,
        )
    except OSError as e:
        hint = f"; {plugin['installHint']}" if plugin.get("installHint") else ""
        raise NodeSourceError(
            f"{where}: cannot run its exec plugin {argv[0]}: {e.strerror or e}{hint}"
        ) from e
    if done.returncode != 0:
        said = " ".join((done.stderr or "").split()) or ("see above" if interactive else "no message")
        raise NodeSourceError(
            f"{where}: its exec plugin {argv[0]} failed with exit code {done.returncode}: {said}"
        )
    return _plugin_credentials(done.stdout, str(api_version), f"{where}: its exec plugin {argv[0]}")


def _interactive(plugin: Mapping[str, Any], where: str) -> bool:
    mode = plugin.get("interactiveMode") or "IfAvailable"
    terminal = sys.stdin is not None and sys.stdin.isatty()
    if mode == "Always" and not terminal:
        raise NodeSourceError(f"{where}: its exec plugin needs a terminal (interactiveMode: Always)")
    return mode != "Never" and terminal


def _exec_info(
    plugin: Mapping[str, Any], cluster: Mapping[str, Any], interactive: bool, where: str
) -> dict[str, Any]:
    """The ExecCredential request kubectl passes in ``$KUBERNETES_EXEC_INFO``."""
    spec: dict[str, Any] = {"interactive": interactive}
    if plugin.get("provideClusterInfo"):
        spec["cluster"] = _cluster_info(cluster, where)
    return {"apiVersion": plugin["apiVersion"], "kind": "ExecCredential", "spec": spec}


def _cluster_info(cluster: Mapping[str, Any], where: str) -> dict[str, Any]:
    info = {key: cluster[key] for key in _CLUSTER_INFO if key in cluster}
    ca = cluster.get("certificate-authority-data")
    if not ca and cluster.get("certificate-authority"):
        try:
            ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
        except OSError as e:
            raise NodeSourceError(f"{where}: cannot read certificate-authority: {e}") from e
    if ca:
        info["certificate-authority-data"] = ca
    for extension in cluster.get("extensions") or ():
        if mapping(extension).get("name") == _EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


def _plugin_credentials(output: str, api_version: str, plugin: str) -> dict[str, str]:
    """The token and/or client certificate from the plugin's ExecCredential."""
    try:
        answer = json.loads(output)
    except ValueError as e:
        raise NodeSourceError(f"{plugin} printed no ExecCredential JSON: {e}") from e
    if mapping(answer).get("kind") != "ExecCredential" or answer.get("apiVersion") != api_version:
        raise NodeSourceError(f"{plugin} did not print an ExecCredential of {api_version}")
    status = mapping(answer.get("status"))
    found: dict[str, str] = {}
    if status.get("token"):
        found["token"] = str(status["token"])
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if cert or key:
        if not (cert and key):
            raise NodeSourceError(f"{plugin} gave a client certificate without its key, or a key alone")
        found["client-certificate-data"] = base64.b64encode(str(cert).encode()).decode()
        found["client-key-data"] = base64.b64encode(str(key).encode()).decode()
    if not found:
        raise NodeSourceError(f"{plugin} gave neither a token nor a client certificate")
    return found
