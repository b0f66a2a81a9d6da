"""The nodeload-agent DaemonSet's pods on :class:`~tests.fakes.kube_api.FakeKubeApi`, and the
API server's pod exec (the ``v5``/``v4.channel.k8s.io`` websocket subprotocols).

No kubelet or container runtime runs here: an exec into an agent pod is relayed to the
sandbox node the pod stands for, over SSH (``ssh -T NODE -- COMMAND``), as the API server relays
it to the node's kubelet. The bytes therefore cross the node's network interface, where the
tests count them, and the command (the relay nodeload asks for) runs on the real node.

What it does, and no more: ``GET /api/v1/namespaces/{ns}/pods`` with ``labelSelector`` and
``fieldSelector=spec.nodeName=...`` (each pod controlled by the chart's DaemonSet, as the
DaemonSet controller makes them, unless a test gives it other ``owners``), and the exec
websocket with stdin/stdout/stderr and the final Status on channel 3; users in
:attr:`AgentPods.list_forbidden` get 403 listing pods, users in :attr:`AgentPods.exec_forbidden`
get 403 at the exec handshake, with kube's wording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from tests.fakes.kube_api import USER, FakeKubeApi, parse_selector, status

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
LABELS = {"app.kubernetes.io/name": "nodeload-agent", "app.kubernetes.io/component": "agent"}
DAEMONSET = "nodeload-agent"  # the chart names its DaemonSet so, whatever the release


def daemonset_owner(name: str = DAEMONSET, *, controller: bool = True) -> dict[str, object]:
    """The reference the DaemonSet controller writes on the pods it makes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": name,
        "uid": "5b0e3b5c-8f1d-4a8e-9c1e-" + name.encode().hex()[:12].ljust(12, "0"),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


@dataclass
class AgentPod:
    """One agent pod: the node it runs on, whether it is ready, and how an exec reaches that node."""

    name: str
    node: str
    relay: Sequence[str]  # argv prefix that runs a shell command line on the node, e.g. ssh -T node-1 --
    ready: bool = True
    execs: list[list[str]] = field(default_factory=list)  # every command run in it
    # metadata.ownerReferences: [] for a pod someone made by hand with the agent's labels.
    owners: list[dict[str, object]] = field(default_factory=lambda: [daemonset_owner()])


class AgentPods:
    """Agent pods served by ``api`` in ``namespace``."""

    def __init__(self, api: FakeKubeApi, namespace: str = "nodeload") -> None:
        """Add the pod routes to ``api`` (before it starts)."""
        self.namespace = namespace
        self.pods: dict[str, AgentPod] = {}
        self.list_forbidden: set[str] = set()
        self.exec_forbidden: set[str] = set()
        api.app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._list)
        api.app.router.add_get("/api/v1/namespaces/{namespace}/pods/{pod}/exec", self._exec)

    def add(self, pod: AgentPod) -> AgentPod:
        """Run ``pod``."""
        self.pods[pod.name] = pod
        return pod

    def _object(self, pod: AgentPod) -> dict[str, object]:
        ready = "True" if pod.ready else "False"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": self.namespace,
                "labels": dict(LABELS),
                "ownerReferences": [dict(owner) for owner in pod.owners],
            },
            "spec": {"nodeName": pod.node, "containers": [{"name": "agent"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]},
        }

    async def _list(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        if request[USER] in self.list_forbidden:
            message = (
                f'pods is forbidden: User "{request[USER]}" cannot list resource "pods" in API group "" '
                f'in the namespace "{namespace}"'
            )
            return status(403, "Forbidden", message, kind="pods")
        requirements = parse_selector(request.query.get("labelSelector", ""))
        field_key, _, node = request.query.get("fieldSelector", "").partition("=")
        items = [
            self._object(pod)
            for pod in self.pods.values()
            if namespace == self.namespace
            and all(r.matches(LABELS) for r in requirements)
            and (field_key != "spec.nodeName" or pod.node == node)
        ]
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        if request[USER] in self.exec_forbidden:
            message = (
                f'pods "{name}" is forbidden: User "{request[USER]}" cannot create resource "pods/exec" '
                f'in API group "" in the namespace "{namespace}"'
            )
            return status(403, "Forbidden", message, kind="pods", name=name)
        pod = self.pods.get(name)
        if pod is None or namespace != self.namespace:
            return status(404, "NotFound", f'pods "{name}" not found', kind="pods", name=name)
        argv = request.query.getall("command", [])
        pod.execs.append(list(argv))
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        process = await asyncio.create_subprocess_exec(
            *pod.relay,
            shlex.join(argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin and process.stdout and process.stderr
        outputs = [
            asyncio.ensure_future(_pump(process.stdout, ws, 1)),
            asyncio.ensure_future(_pump(process.stderr, ws, 2)),
        ]
        inputs = asyncio.ensure_future(_stdin(ws, process.stdin, v5=ws.ws_protocol == PROTOCOLS[0]))
        try:
            await asyncio.gather(*outputs)
            code = await process.wait()
            await ws.send_bytes(bytes([3]) + json.dumps(_status(code)).encode())
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away
        finally:
            inputs.cancel()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await ws.close()
        return ws


async def _pump(stream: asyncio.StreamReader, ws: web.WebSocketResponse, channel: int) -> None:
    while data := await stream.read(256 * 1024):
        await ws.send_bytes(bytes([channel]) + data)


async def _stdin(ws: web.WebSocketResponse, stdin: asyncio.StreamWriter, *, v5: bool) -> None:
    """Client frames to the process's stdin until the client closes it (v5) or goes away."""
    async for message in ws:
        if message.type != WSMsgType.BINARY or not message.data:
            continue
        data: bytes = message.data
        if data[0] == 0:
            stdin.write(data[1:])
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await stdin.drain()
        elif v5 and data[:2] == bytes([255, 0]):
            stdin.close()
    if not stdin.is_closing():
        stdin.close()


def _status(code: int) -> dict[str, object]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
