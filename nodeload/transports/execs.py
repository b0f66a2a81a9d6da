"""Running a command on a node with its stdin and stdout as byte streams.

SSH exec channels, ``docker exec`` (kind/k3d nodes) and the Kubernetes API's pod exec all
give the same thing: a process on the node whose standard streams reach us. An
:class:`Executor` starts one; the exec bridge (``bridge.py``) and the ``ctr import``
fallback (``stores/ctr_import.py``) are built on it and know nothing of which kind it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nodeload.errors import NodeError

# The most a short command (a probe, `ctr content ls`) may print: its output is read whole.
MAX_TEXT_OUTPUT = 16 << 20


class ProcessInput(Protocol):
    """The process's stdin."""

    def write(self, data: bytes) -> None:
        """Queue ``data``."""
        ...

    async def drain(self) -> None:
        """Wait until the queued data may grow again (flow control)."""
        ...

    def write_eof(self) -> None:
        """Close stdin."""
        ...


class ProcessOutput(Protocol):
    """The process's stdout."""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end."""
        ...


class ExecProcess(Protocol):
    """A command running on the node."""

    @property
    def stdin(self) -> ProcessInput:
        """Its standard input."""
        ...

    @property
    def stdout(self) -> ProcessOutput:
        """Its standard output."""
        ...

    async def wait(self) -> ExecResult:
        """Wait for it to end; its exit status and what it wrote to stderr."""
        ...

    def close(self) -> None:
        """Stop it (if still running) and release its streams."""
        ...


@dataclass(frozen=True)
class ExecResult:
    """How a command on the node ended."""

    status: int
    stderr: str


class Executor(Protocol):
    """Starts commands on one node."""

    @property
    def label(self) -> str:
        """How commands reach the node, for reports: ``ssh-exec``, ``docker-exec``..."""
        ...

    async def start(self, command: str) -> ExecProcess:
        """Start ``command`` (a POSIX shell command line) on the node.

        Raises:
            NodeError: when the node refuses to run commands.
        """
        ...


async def run_text(executor: Executor, command: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run a short command; its exit status, stdout and stderr as text.

    Raises:
        NodeError: the command printed more than :data:`MAX_TEXT_OUTPUT`, or the node refused it.
    """
    process = await executor.start(command)
    try:
        if stdin:
            process.stdin.write(stdin)
        process.stdin.write_eof()
        chunks, size = [], 0
        while chunk := await process.stdout.read(65536):
            size += len(chunk)
            if size > MAX_TEXT_OUTPUT:
                raise NodeError(
                    f"a command on the node printed more than {MAX_TEXT_OUTPUT >> 20} MiB, "
                    "more than nodeload reads of its answer: stopped"
                )
            chunks.append(chunk)
        result = await process.wait()
    finally:
        process.close()
    return result.status, b"".join(chunks).decode(errors="replace"), result.stderr


def keyvalues(text: str) -> dict[str, list[str]]:
    """The ``key=value`` lines a probe script printed (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key.strip(), []).append(value.strip())
    return values
