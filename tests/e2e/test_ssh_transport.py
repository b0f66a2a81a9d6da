"""What an SSH transport does to the connection and to this machine, on a real node.

sshd sends without Nagle's algorithm on a nodeload connection. OpenSSH sets TCP_NODELAY on
a connection only once a session on it runs a command; a connection that only forwards keeps
Nagle on, and every small reply sshd sends behind unacknowledged data (the end of each upload,
each stream's next message) waits for the client's delayed ACK: 40 ms on Linux, paid several
times per push. nodeload runs one ``true`` per connection to switch it off. The option is read
from sshd's own socket, taken from the process on the node (pidfd_getfd: the nodes' processes
are this machine's).

A connection kept open between pushes (a persistent session) keeps its local socket
directory from other runs' sweeps of day-old leftovers, and after a while idle is reused only
when the node still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Iterator

import docker
import pytest

from nodeload import scratch
from nodeload.nodes.spec import NodeSpec
from nodeload.sandbox import Sandbox
from nodeload.transports import ssh as ssh_transport
from nodeload.transports.ssh import SSHOptions, SSHTransport

pytestmark = pytest.mark.e2e

_PIDFD_GETFD = 438  # the syscall's number on every Linux architecture (since 5.6)


def _sshd_tcp_nodelay(client: docker.DockerClient, container: str) -> list[int]:
    """TCP_NODELAY of every connected TCP socket the node's sshd processes hold."""
    libc = ctypes.CDLL(None, use_errno=True)
    top = client.api.top(container, ps_args="-eo pid,comm")["Processes"]
    flags = []
    for pid in (int(row[0]) for row in top if "sshd" in row[1]):
        with contextlib.ExitStack() as stack:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone meanwhile
            stack.callback(os.close, pidfd)
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                        continue
                    copy = libc.syscall(_PIDFD_GETFD, pidfd, int(fd), 0)
                    if copy < 0:
                        raise OSError(ctypes.get_errno(), f"pidfd_getfd of sshd {pid} fd {fd}")
                    sock = socket.socket(fileno=copy)
                    try:
                        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
                        tcp = inet and sock.type == socket.SOCK_STREAM
                        if tcp and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                    finally:
                        sock.close()
    return flags


@pytest.fixture()
def one_node(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    with Sandbox(1, image=node_image, client=docker_client) as sb:
        yield sb


def test_sshd_sends_without_nagle_on_a_nodeload_connection(
    one_node: Sandbox, docker_client: docker.DockerClient
) -> None:
    node = one_node.node("node-1")
    options = SSHOptions(ssh_config=one_node.ssh_config_path)

    async def connected_flags() -> list[int]:
        async with SSHTransport(NodeSpec(name="node-1", address="node-1"), options) as transport:
            await transport.open_socket("/run/containerd/containerd.sock")
            for _ in range(100):  # the command runs alongside the forward: give it a moment
                flags = _sshd_tcp_nodelay(docker_client, node.container_id)
                if flags and all(flags):
                    break
                await asyncio.sleep(0.05)
            return flags

    flags = asyncio.run(connected_flags())
    assert flags == [1], f"sshd's TCP sockets (TCP_NODELAY per socket): {flags}"


def test_a_kept_forward_is_not_swept_while_it_is_used(one_node: Sandbox) -> None:
    options = SSHOptions(ssh_config=one_node.ssh_config_path)
    socket_path = "/run/containerd/containerd.sock"

    async def reuse_after_a_day() -> tuple[str, str, bool]:
        transport = SSHTransport(NodeSpec(name="node-1", address="node-1"), options)
        transport.keep_open = True
        try:
            async with transport:
                first = await transport.open_socket(socket_path)
            directory = os.path.dirname(first.removeprefix("unix:"))
            a_day_ago = time.time() - 25 * 3600
            os.utime(directory, (a_day_ago, a_day_ago))  # as if opened a day ago
            async with transport:
                again = await transport.open_socket(socket_path)  # the next push of the session
            swept = scratch.sweep(os.path.dirname(directory), "nodeload-")  # another run starting
            return first, again, os.path.exists(first.removeprefix("unix:")) and not swept
        finally:
            await transport.close()

    first, again, kept = asyncio.run(reuse_after_a_day())
    assert again == first and kept


def test_a_kept_connection_idle_for_a_while_must_answer_before_reuse(
    one_node: Sandbox, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a while idle, a kept connection is reused only if the node answers one round trip: a
    connection whose peer went silent (no FIN, no RST: its sshd stopped, as behind a NAT that
    forgot it) is replaced by a new one. Here every reuse counts as idle for long."""
    monkeypatch.setattr(ssh_transport, "_IDLE_TRUSTED", 0.0)
    monkeypatch.setattr(ssh_transport, "_ANSWER_SECONDS", 1.0)
    container = one_node.node("node-1").container_id
    options = SSHOptions(ssh_config=one_node.ssh_config_path)

    def session_processes() -> list[int]:  # sshd's per-connection processes (not its listener)
        rows = docker_client.api.top(container, ps_args="-eo pid,args")["Processes"]
        return [int(row[0]) for row in rows if row[1].startswith("sshd: root")]

    async def reuses() -> tuple[bool, bool]:
        transport = SSHTransport(NodeSpec(name="node-1", address="node-1"), options)
        transport.keep_open = True
        try:
            async with transport:
                await transport.open_socket("/run/containerd/containerd.sock")
                first = transport._conn()
            async with transport:  # idle, answering: the same connection
                same = transport._conn() is first
            stopped = session_processes()
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            try:
                async with transport:  # idle, silent: a new connection, and it works
                    replaced = transport._conn() is not first
                    await transport.open_socket("/run/containerd/containerd.sock")
            finally:
                for pid in stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            return same, replaced
        finally:
            await transport.close()

    assert asyncio.run(reuses()) == (True, True)
