"""The node's sshd sends without Nagle's algorithm on a nodeload connection.

OpenSSH sets TCP_NODELAY on a connection only once a session on it runs a command; a
connection that only forwards keeps Nagle on, and every small reply sshd sends behind
unacknowledged data (the end of each upload, each stream's next message) waits for the
client's delayed ACK: 40 ms on Linux, paid several times per push. nodeload runs one ``true``
per connection to switch it off. The option is read from sshd's own socket, taken from the
process on the node (pidfd_getfd: the nodes' processes are this machine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

import docker
import pytest

from nodeload.nodes.spec import NodeSpec
from nodeload.sandbox import Sandbox
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
