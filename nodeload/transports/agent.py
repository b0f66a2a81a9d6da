"""Nodes reached through their nodeload-agent pod and the Kubernetes API (``--reach agent``).

For clusters nobody has SSH to (EKS, GKE, AKS, locked-down fleets): the chart
``charts/nodeload-agent`` runs one pod per node with the node's containerd socket directory
mounted. nodeload finds the pod on each node (by label and ``spec.nodeName``, and only one its
DaemonSet made) and runs a relay (``socat``) in it through the API server's exec, per gRPC
connection, exactly as over an SSH exec channel; the push path above is the same. The API server
sees who execs: only users allowed ``pods/exec`` in the agent namespace get through, which is
root on the nodes.
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
from nodeload.wording import setting

# What charts/nodeload-agent puts on its pods, its container's name and its DaemonSet's (a unit
# test checks them against the rendered chart).
AGENT_LABEL_KEY = "app.kubernetes.io/name"
AGENT_LABEL_VALUE = "nodeload-agent"
AGENT_CONTAINER = "agent"
AGENT_DAEMONSET = "nodeload-agent"
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
        self.reach = "agent-exec"

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
        self.reach = f"agent-exec:{relay.label}"
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
                # Anyone who may create pods in the namespace can copy the labels: only the
                # DaemonSet's own pods may receive the images.
                owned = [pod for pod in pods if _made_by_daemonset(pod, access.agent_namespace)]
                hint = "" if owned else _control_plane_hint(api, self._spec.name)
        except kube_client.ApiException as err:
            raise NodeUnreachable(self._lookup_refused(err)) from err
        except Exception as err:  # urllib3 and TLS failures: the API server is out of reach
            raise NodeUnreachable(
                f"cannot reach the API server {access.server} to find the agent: {err}"
            ) from err
        ready = [pod["metadata"]["name"] for pod in owned if _ready(pod)]
        if not ready:
            raise NodeUnreachable(self._no_agent(pods, owned, hint))
        return config, sorted(ready)[0]

    def _no_agent(self, pods: list[dict[str, Any]], owned: list[dict[str, Any]], hint: str) -> str:
        access = self._access
        impostors = sorted(_name(pod) for pod in pods if pod not in owned)
        if owned:
            state = f"{len(owned)} agent pod(s) there, none ready"
        elif impostors:
            state = "; ".join(
                f"pod {name} has the agent's labels but is not owned by the {AGENT_DAEMONSET} "
                "DaemonSet: ignored"
                for name in impostors
            )
        else:
            state = "no agent pod there"
        hint = hint or "install it with helm install nodeload-agent charts/nodeload-agent"
        missing = (
            f"node {self._spec.name} has no ready nodeload-agent pod in namespace "
            f"{access.agent_namespace} ({state}); {hint}"
        )
        if access.instead_of_ssh:  # the agent was the fallback: say why SSH was not used
            missing = f"{access.instead_of_ssh}, and {missing}, or choose another {setting('address_type')}"
        return missing

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


def _made_by_daemonset(pod: dict[str, Any], namespace: str) -> bool:
    """Whether the chart's DaemonSet controls ``pod`` (its controller reference, in ``namespace``).

    The reference is the pod's own metadata, so whoever creates a pod can forge one; the cluster
    removes such a pod (the garbage collector when the owner uid is wrong, the DaemonSet
    controller when it is right, keeping one pod per eligible node, the older running one), but
    who may create pods in the agent namespace stays the real boundary.
    """
    metadata = pod.get("metadata") or {}
    if metadata.get("namespace", namespace) != namespace:
        return False
    return any(
        isinstance(ref, dict)
        and ref.get("controller") is True
        and ref.get("apiVersion") == "apps/v1"
        and ref.get("kind") == "DaemonSet"
        and ref.get("name") == AGENT_DAEMONSET
        for ref in metadata.get("ownerReferences") or ()
    )


def _control_plane_hint(api: Any, node: str) -> str:
    """What to do when ``node`` has no agent because it is a control plane ("" when it is not,
    or the node cannot be read: the hint is a courtesy)."""
    from kubernetes import client as kube_client

    from nodeload.nodes.kubernetes import CONTROL_PLANE_LABELS

    try:
        response: Any = kube_client.CoreV1Api(api).read_node(
            node, _preload_content=False, _request_timeout=(_LIST_TIMEOUT, _LIST_TIMEOUT)
        )
        labels = (json.loads(response.data).get("metadata") or {}).get("labels") or {}
    except Exception:
        return ""
    if not any(label in labels for label in CONTROL_PLANE_LABELS):
        return ""
    return (
        "it is a control-plane node, where the chart runs no agent unless installed with "
        f"--set controlPlane=true (or leave such nodes out with {setting('exclude_control_plane')})"
    )


def _name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
