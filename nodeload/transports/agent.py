"""Nodes reached through their nodeload-agent pod and the Kubernetes API (``--via agent``).

For clusters nobody has SSH to (EKS, GKE, AKS, locked-down fleets): the chart
``charts/nodeload-agent`` runs one pod per node with the node's containerd socket directory
mounted. nodeload finds the pod on each node (by label and ``spec.nodeName``) and runs a relay
(``socat``) in it through the API server's exec, per gRPC connection, exactly as over an SSH
exec channel; the push path above is the same. The API server sees who execs: only users
allowed ``pods/exec`` in the agent namespace get through, which is root on the nodes.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Self

import aiohttp

from nodeload.errors import NodeSourceError, NodeUnreachable
from nodeload.nodes.spec import NodeSpec
from nodeload.transports.base import Traffic
from nodeload.transports.bridge import RelaySockets
from nodeload.transports.kube_exec import ApiEndpoint, Counters, KubeExecutor

# What charts/nodeload-agent puts on its pods, and its container's name (a unit test checks both).
AGENT_LABEL_KEY = "app.kubernetes.io/name"
AGENT_LABEL_VALUE = "nodeload-agent"
AGENT_CONTAINER = "agent"
_LIST_TIMEOUT = 15.0


class AgentTransport:
    """Reach one node's sockets through its agent pod (a :class:`~nodeload.transports.base.Transport`)."""

    def __init__(self, node: NodeSpec) -> None:
        """Prepare (not yet look up) the agent pod of Kubernetes node ``node.name``."""
        if node.kube is None:
            raise ValueError(f"node {node.name} has no Kubernetes API to reach its agent through")
        self._spec, self._access = node, node.kube
        self._session: aiohttp.ClientSession | None = None
        self._executor: KubeExecutor | None = None
        self._sockets = RelaySockets()
        self._counters = Counters()
        self.method = "agent-exec"

    @property
    def node(self) -> str:
        """The node's name."""
        return self._spec.name

    async def __aenter__(self) -> Self:
        """Find the node's ready agent pod.

        Raises:
            NodeUnreachable: no ready agent pod on the node, or the API refuses the lookup.
        """
        configuration, pod = await asyncio.to_thread(self._find_pod)
        endpoint = ApiEndpoint.from_configuration(configuration)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=_LIST_TIMEOUT)
        )
        namespace = self._access.agent_namespace
        self._executor = KubeExecutor(
            self._session, endpoint, namespace, pod, AGENT_CONTAINER, self._counters
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._sockets.close()
        if self._session is not None:
            await self._session.close()
        self._session, self._executor = None, None

    def executor(self) -> KubeExecutor:
        """Commands in the agent pod."""
        if self._executor is None:
            raise RuntimeError("AgentTransport used outside its context")
        return self._executor

    def traffic(self) -> Traffic | None:
        """Bytes through the exec streams (websocket payloads; TLS and HTTP framing not counted)."""
        return self._counters.traffic()

    async def open_socket(self, path: str) -> str:
        """A local gRPC target relayed through the agent pod to the node's socket ``path``.

        Raises:
            SocketUnavailable: the socket is missing (or not mounted into the agent), or NoRelay.
        """
        target, relay = await self._sockets.open(self.executor(), path)
        self.method = f"agent-exec:{relay.label}"
        return target

    # -- the agent pod ------------------------------------------------------------------------

    def _find_pod(self) -> tuple[Any, str]:
        """The API client configuration and the name of the node's ready agent pod (blocking)."""
        from kubernetes import client as kube_client

        from nodeload.nodes.kubernetes import configuration

        access = self._access
        try:
            config = configuration(access)
        except NodeSourceError as err:
            raise NodeUnreachable(str(err)) from err
        config.retries = 0
        try:
            with kube_client.ApiClient(config) as api:
                response: Any = kube_client.CoreV1Api(api).list_namespaced_pod(
                    access.agent_namespace,
                    label_selector=f"{AGENT_LABEL_KEY}={AGENT_LABEL_VALUE}",
                    field_selector=f"spec.nodeName={self._spec.name}",
                    _preload_content=False,
                    _request_timeout=(_LIST_TIMEOUT, _LIST_TIMEOUT),
                )
                pods = json.loads(response.data).get("items") or []
        except kube_client.ApiException as err:
            raise NodeUnreachable(self._lookup_refused(err)) from err
        except Exception as err:  # urllib3 and TLS failures: the API server is out of reach
            raise NodeUnreachable(
                f"cannot reach the API server {access.server} to find the agent: {err}"
            ) from err
        ready = [pod["metadata"]["name"] for pod in pods if _ready(pod)]
        if not ready:
            state = f"{len(pods)} agent pod(s) there, none ready" if pods else "no agent pod there"
            missing = (
                f"node {self._spec.name} has no ready nodeload-agent pod in namespace "
                f"{access.agent_namespace} ({state}); install it with helm install nodeload-agent "
                "charts/nodeload-agent"
            )
            if access.instead_of_ssh:  # the agent was the fallback: say why SSH was not used
                missing = f"{access.instead_of_ssh}, and {missing}, or choose another --address-type"
            raise NodeUnreachable(missing)
        return config, sorted(ready)[0]

    def _lookup_refused(self, err: Any) -> str:
        namespace = self._access.agent_namespace
        who = f"user {self._access.user!r} (context {self._access.context!r})"
        if err.status == 403:
            return (
                f"{who} cannot list pods in namespace {namespace}: pushing through the agent needs pods "
                "get/list and pods/exec create there (the chart's Role, values: pushers)"
            )
        if err.status == 401:
            return f"the API server {self._access.server} rejected the credentials of {who}"
        return f"the API server {self._access.server} answered {err.status} {err.reason} listing agent pods"


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
