"""Commands in a pod, through the Kubernetes API server's exec: a websocket per process.

The API server speaks the channel subprotocols of ``kubectl exec``: every binary message
starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 the final status as JSON) and
carries raw bytes. ``v5.channel.k8s.io`` (Kubernetes 1.30+) can also close stdin (a message
``255, 0``); with ``v4.channel.k8s.io`` stdin stays open until the websocket closes, which is
all a relay needs. aiohttp carries the websocket (async, binary-safe); the kubeconfig's
server, TLS and credentials come from the official client's configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from nodeload.errors import NodeError
from nodeload.transports.base import Traffic
from nodeload.transports.execs import ExecResult

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255
# How much stdin may wait to be sent before writers are held back.
_HIGH_WATER = 1 << 20
# The largest websocket message taken from the API server. Its exec frames are a copy buffer
# each (32 KiB from kubelet, as many through the API server's translation): 4 MiB leaves a wide
# margin and keeps a hostile or broken server from making nodeload hold one unbounded message.
MAX_MESSAGE = 4 << 20
# The most output held that nothing has read yet (stderr, which is kept for the result, and
# stdout while the caller only waits for the end): past it the command fails.
MAX_COLLECTED = 16 << 20


@dataclass(frozen=True)
class ApiEndpoint:
    """Where and as whom to call the API server: what a kubeconfig context says."""

    server: str  # https://host:port
    ssl: ssl.SSLContext
    headers: dict[str, str]

    @classmethod
    def from_configuration(cls, configuration: Any) -> ApiEndpoint:
        """From a ``kubernetes.client.Configuration`` loaded from a kubeconfig.

        Credentials (token, basic auth, client certificate) go to an ``https://`` server
        only, as with kubectl: plain HTTP would show them to the network.
        """
        server = configuration.host.rstrip("/")
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if not configuration.verify_ssl:  # insecure-skip-tls-verify in the kubeconfig
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if not server.startswith("https://"):
            return cls(server, context, {})
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        headers = {}
        # The kubeconfig loader keeps the token under "BearerToken" (older clients: "authorization").
        for key in ("BearerToken", "authorization"):
            token = configuration.get_api_key_with_prefix(key)
            if token:
                headers["Authorization"] = token
                break
        return cls(server, context, headers)


class Counters:
    """Bytes carried through exec streams, both ways (websocket payloads)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def traffic(self) -> Traffic:
        """As a Traffic."""
        return Traffic(self.sent, self.received)


class KubeExecutor:
    """Runs commands in one container of one pod (an :class:`~nodeload.transports.execs.Executor`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: ApiEndpoint,
        namespace: str,
        pod: str,
        container: str,
        counters: Counters,
    ) -> None:
        """Exec into ``namespace/pod``'s ``container`` through ``endpoint``."""
        self._session, self._endpoint, self._counters = session, endpoint, counters
        self._namespace, self._pod, self._container = namespace, pod, container

    @property
    def label(self) -> str:
        """``agent-exec``."""
        return "agent-exec"

    async def start(self, command: str) -> KubeProcess:
        """Start ``sh -c command`` in the pod.

        Raises:
            NodeError: the API server refused the exec (RBAC, a pod that is gone...).
        """
        return await self.start_argv(["sh", "-c", command])

    async def start_argv(self, argv: Sequence[str]) -> KubeProcess:
        """Start ``argv`` in the pod (see :meth:`start`)."""
        query = [("container", self._container), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
        query += [("command", arg) for arg in argv]
        path = f"/api/v1/namespaces/{self._namespace}/pods/{self._pod}/exec"
        url = f"{self._endpoint.server}{path}?{urlencode(query)}"
        try:
            ws = await self._session.ws_connect(
                url,
                protocols=PROTOCOLS,
                ssl=self._endpoint.ssl,
                headers=self._endpoint.headers,
                max_msg_size=MAX_MESSAGE,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as err:
            raise NodeError(self._refused(err.status, err.message)) from err
        except (aiohttp.ClientError, OSError) as err:
            raise NodeError(f"cannot reach the API server {self._endpoint.server} for exec: {err}") from err
        return KubeProcess(ws, self._counters, where=f"pod {self._namespace}/{self._pod}")

    def _refused(self, status: int, message: str) -> str:
        where = f"pod {self._pod} in namespace {self._namespace}"
        if status == 403:
            return (
                f"your kubeconfig user cannot create pods/exec in namespace {self._namespace} ({message}); "
                "the chart's Role grants it (values: pushers)"
            )
        if status == 401:
            return f"the API server rejected your kubeconfig credentials ({message})"
        if status == 404:
            return f"the agent {where} is gone ({message}); rerun to find its replacement"
        return f"the API server refused to exec in {where}: {status} {message}"


class _Stdin:
    def __init__(self, process: KubeProcess) -> None:
        self._process = process

    def write(self, data: bytes) -> None:
        self._process.queue(data)

    async def drain(self) -> None:
        await self._process.flush()

    def write_eof(self) -> None:
        self._process.close_stdin()


class _Stdout:
    def __init__(self, process: KubeProcess) -> None:
        self._process = process

    async def read(self, n: int = -1) -> bytes:
        return await self._process.read_stdout(n)


class KubeProcess:
    """A command running in a pod, its standard streams carried by one websocket.

    Output is taken from the websocket only when wanted: :meth:`read_stdout` takes the next
    message once the last one is read, so a slow reader holds the API server back (aiohttp stops
    reading the socket, TCP does the rest) instead of nodeload buffering what it sends. What is
    kept unread (stderr, or stdout while :meth:`wait` drains the stream) is bounded by
    :data:`MAX_COLLECTED`, each message by :data:`MAX_MESSAGE`.
    """

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, counters: Counters, *, where: str = "the pod"
    ) -> None:
        self._ws, self._counters, self._where = ws, counters, where
        self._v5 = ws.protocol == PROTOCOLS[0]
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._send_lock = asyncio.Lock()
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._status: dict[str, Any] | None = None
        self._closed = False
        self.stdin = _Stdin(self)
        self.stdout = _Stdout(self)

    # -- stdin ------------------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)

    async def flush(self) -> None:
        async with self._send_lock:
            while self._pending:
                data = self._pending.pop(0)
                self._pending_bytes -= len(data)
                try:
                    await self._ws.send_bytes(bytes([STDIN]) + data)
                except (ConnectionResetError, aiohttp.ClientError) as err:
                    raise NodeError(f"the exec stream closed: {err}") from err
                self._counters.sent += len(data)

    def close_stdin(self) -> None:
        if self._v5 and not self._ws.closed:
            task = asyncio.ensure_future(self._send_close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_close(self) -> None:
        await self.flush()
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
            await self._ws.send_bytes(bytes([CLOSE, STDIN]))

    # -- output -------------------------------------------------------------------------------

    async def read_stdout(self, n: int = -1) -> bytes:
        while not self._stdout and not self._closed:
            await self._receive()
        size = len(self._stdout) if n < 0 else min(n, len(self._stdout))
        data = bytes(self._stdout[:size])
        del self._stdout[:size]
        return data

    async def _receive(self) -> None:
        message = await self._ws.receive()
        if message.type == aiohttp.WSMsgType.BINARY:
            data: bytes = message.data
            if not data:
                return
            channel, payload = data[0], data[1:]
            self._counters.received += len(payload)
            if channel == STDOUT:
                self._stdout += self._collect(self._stdout, payload, "stdout that nothing read")
            elif channel == STDERR:
                self._stderr += self._collect(self._stderr, payload, "stderr")
            elif channel == STATUS and payload:
                with contextlib.suppress(ValueError):
                    self._status = json.loads(payload)
        elif message.type == aiohttp.WSMsgType.ERROR and _too_big(message.data):
            self._closed = True
            raise NodeError(
                f"the API server sent a message of more than {MAX_MESSAGE >> 20} MiB on the exec stream "
                f"of {self._where} (exec frames are 32 KiB or so): refused"
            )
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            self._closed = True

    def _collect(self, kept: bytearray, payload: bytes, what: str) -> bytes:
        if len(kept) + len(payload) > MAX_COLLECTED:
            raise NodeError(
                f"the command in {self._where} wrote more than {MAX_COLLECTED >> 20} MiB of {what}, "
                "more than nodeload keeps: stopped"
            )
        return payload

    async def wait(self) -> ExecResult:
        """Read to the end; the exit status (from the status channel) and stderr."""
        while not self._closed:
            await self._receive()
        return ExecResult(_exit_status(self._status), self._stderr.decode(errors="replace"))

    def close(self) -> None:
        """Close the websocket (the API server ends the process's streams)."""
        self._closed = True
        if not self._ws.closed:
            task = asyncio.ensure_future(self._ws.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _too_big(error: object) -> bool:
    """Whether a websocket error is aiohttp refusing a message over ``max_msg_size``."""
    return getattr(error, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


def _exit_status(status: dict[str, Any] | None) -> int:
    """The process's exit code from the API server's final Status object."""
    if status is None:
        return 255  # the stream ended without a status: the process's fate is unknown
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or ():
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    return 1
