"""The last resort for a node nothing can relay a stream to: ``ctr import`` of only what it lacks.

Some nodes have neither SSH stream forwarding nor any relay program (k3s and k3d nodes ship
no socat), but ``ctr`` (or ``k3s ctr``) is there wherever containerd is. nodeload lists the
node's content with ``ctr content ls``, plans exactly as for a direct push (platform choice,
blobs the node holds, twins of layers it holds uncompressed, naming rules), and streams an
OCI archive holding only the missing blobs into ``ctr -n NS images import -``, which finds
the rest in the content store. There is no mid-blob resume on this path: an interrupted
transfer starts that archive again (the report says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import shlex
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from nodeload.errors import ConnectionLost, ContainerdUnavailable, NodeError, PlatformNotFound, PushFailed
from nodeload.image import Descriptor, ImageSource
from nodeload.nodes.spec import NodeSpec
from nodeload.plan import BlobStep, NodeState, make_plan
from nodeload.platforms import Platform, choose_platform
from nodeload.progress import ProgressSink
from nodeload.stores.base import (
    CRI_NAMESPACE,
    Delivery,
    PreparedImage,
    StoreInfo,
    WriteOptions,
    Written,
    check_name,
    same_image,
)
from nodeload.transports.bridge import SUDO_PROBE
from nodeload.transports.execs import ExecProcess, ExecResult, Executor, keyvalues, run_text
from nodeload.wording import setting

METHOD = "ctr-import"
NAME_ANNOTATION = "io.containerd.image.name"
_BLOCK = 512
_CHUNK = 1 << 20
_CRI_WAIT_SECONDS = 10.0
_ENDED_SECONDS = 5.0  # how long a ctr that stopped reading may take to say why
_NO_RESUME = "ctr import: no mid-blob resume on this path (an interrupted blob is resent whole)"
# What the node says comes back as key=value lines: it names the socket by its index in the
# list given, and ctr by a fixed word, so that nothing a path on the node holds can add a line
# or become part of a later command.
_PROBE = (
    """i=0
for p in {sockets}; do
  if [ -S "$p" ]; then
    echo socket=$i
    if [ -r "$p" ] && [ -w "$p" ]; then echo access=rw; else echo access=denied; fi
    break
  fi
  i=$((i+1))
done
command -v ctr >/dev/null 2>&1 && echo ctr=ctr
command -v k3s >/dev/null 2>&1 && echo ctr=k3s
echo arch="$(uname -m)"
"""
    + SUDO_PROBE
)
# The ctr invocations nodeload runs, by the probe's word for them.
_CTR = {"ctr": "ctr", "k3s": "k3s ctr"}


@asynccontextmanager
async def open_ctr_import(
    executor: Executor, node: NodeSpec, progress: ProgressSink, sockets: list[str], transport: str
) -> AsyncIterator[CtrImportStore]:
    """The node's containerd, reached by running ``ctr`` on it through ``executor``.

    ``transport`` names how commands reach the node (``ssh-exec``, ``docker-exec``) for reports.

    Raises:
        ContainerdUnavailable: no ctr, no containerd socket, or no permission (and no usable sudo).
    """
    progress.message(node.name, "looking for ctr")
    _, out, _ = await run_text(executor, _PROBE.format(sockets=" ".join(map(shlex.quote, sockets))))
    found = keyvalues(out)
    ctrs = [_CTR[word] for word in found.get("ctr", []) if word in _CTR]
    if not ctrs:
        raise ContainerdUnavailable(
            "the node has no way to reach containerd: no stream forwarding, no relay (socat, nc, python3) "
            "and no ctr or k3s ctr to import with"
        )
    index = found.get("socket", [""])[0]
    if not index.isdigit() or int(index) >= len(sockets):
        raise ContainerdUnavailable(f"no containerd socket on the node (looked at {', '.join(sockets)})")
    socket, sudo = sockets[int(index)], found.get("sudo", ["none"])[0]
    prefix = ""
    if found.get("access", ["denied"])[0] != "rw" and sudo != "root":
        if not node.become or sudo != "ok":
            why = (
                "sudo wants a password"
                if sudo == "password"
                else f"sudo is not allowed ({setting('sudo')}, ansible_become)"
            )
            raise ContainerdUnavailable(
                f"{socket}: user {found.get('user', ['?'])[0]!r} may not open it and {why}"
            )
        prefix = "sudo -n "
    ctr = f"{prefix}{ctrs[0]} --address {shlex.quote(socket)}"
    arch = found.get("arch", [""])[0]
    platform = node.platform or Platform("linux", arch).normalized()
    _, said, _ = await run_text(executor, f"{ctr} version")
    versions = re.findall(r"Version:\s*(\S+)", said)  # the client's, then the server's
    about = StoreInfo(socket, versions[-1] if versions else "", f"{transport}:{METHOD}")
    yield CtrImportStore(executor, node.name, progress, ctr, platform, about)


class CtrImportStore:
    """One node's containerd, written through ``ctr import`` (see :func:`open_ctr_import`)."""

    def __init__(
        self,
        executor: Executor,
        node: str,
        progress: ProgressSink,
        ctr: str,
        platform: Platform,
        about: StoreInfo,
    ) -> None:
        """``ctr`` is the command prefix (``[sudo -n] ctr --address SOCKET``)."""
        self._executor, self._node, self._progress = executor, node, progress
        self._ctr, self._platform, self._about = ctr, platform, about

    @property
    def about(self) -> StoreInfo:
        """What the node's containerd is, as ctr tells."""
        return self._about

    async def push(self, image: PreparedImage, options: WriteOptions, written: Written) -> Delivery:
        """Plan against the node's content list, then import an archive of only the missing blobs."""
        done = Delivery(
            warnings=["ctr import: no mid-blob resume on this path (an interrupted blob is resent)"]
        )
        graph = await asyncio.to_thread(image.graph, options.platform or self._platform)
        declared = graph.platform
        if options.platform is None and declared.os and choose_platform(self._platform, [declared]) is None:
            raise PlatformNotFound(
                f"the image is for {declared} but the node runs {self._platform}; "
                f"set {setting('platform', declared)} to push it anyway"
            )
        # Twins of layers (same content under another digest) are not looked for on this path:
        # ctr reports sizes only rounded, and a rewritten manifest needs them exact.
        with done.timed("plan"):
            state = NodeState(frozenset(await self._content(options.namespace)))
            plan = make_plan(graph, state, "", image.source.rewritable)
            done.platform, done.digest = str(graph.platform), plan.root.digest
            done.image_id = graph.config.desc.digest
            done.blobs_total = len(plan.blobs)
            found = [b for b in plan.blobs if b.present and b.desc.digest not in written.blobs]
            done.blobs_skipped = len(found)
            done.bytes_skipped = sum(b.desc.size for b in found)
            existing = await self._existing(options)
            read = functools.partial(self._read_document, options.namespace)
            same = await same_image(read, existing, plan.root.digest, plan.config_digest, graph.platform)
            check_name(options, plan.root.digest, existing, same_image=same)
        self._progress.message(self._node, f"importing {len(plan.to_send)} of {len(plan.blobs)} blobs")
        with done.timed("write"):
            await self._import(image.source, plan.to_send, plan.root, options, graph.platform, written)
        if options.unpack:
            done.layers_unpacked = len(
                [b for b in plan.to_send if b.desc.media_type.endswith(("gzip", "zstd", "tar"))]
            )
        if options.namespace == CRI_NAMESPACE and graph.platform.matches(self._platform):
            with done.timed("record"):
                done.cri_indexed = await self._wait_for_cri(options.name)
        return done

    async def _run_ctr(self, namespace: str, args: str) -> str:
        command = f"{self._ctr} -n {shlex.quote(namespace)} {args}"
        status, out, err = await run_text(self._executor, command)
        if status != 0:
            raise PushFailed(f"ctr {' '.join(args.split()[:2])} failed on the node: {err.strip()[-500:]}")
        return out

    async def _content(self, namespace: str) -> set[str]:
        """The digests in the node's content store (shared by every namespace)."""
        out = await self._run_ctr(namespace, "content ls --quiet")
        return {line.strip() for line in out.splitlines() if line.startswith("sha")}

    async def _read_document(self, namespace: str, digest: str) -> bytes:
        """A small blob of the node's content store (``ctr content get``)."""
        if not digest.startswith("sha256:") or not all(c in "0123456789abcdef" for c in digest[7:]):
            raise PushFailed(f"not a digest: {digest!r}")
        return (await self._run_ctr(namespace, f"content get {digest}")).encode()

    async def _existing(self, options: WriteOptions) -> str | None:
        if not options.name_from_source:
            return None
        out = await self._run_ctr(options.namespace, f"images ls name=={shlex.quote(options.name)}")
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == options.name:
                return str(fields[2])
        return None

    async def _import(
        self,
        source: ImageSource,
        blobs: tuple[BlobStep, ...],
        root: Descriptor,
        options: WriteOptions,
        platform: Platform,
        written: Written,
    ) -> None:
        flags = ["--no-unpack"] if not options.unpack else []
        if options.snapshotter:
            flags += ["--snapshotter", shlex.quote(options.snapshotter)]
        flags += ["--platform", shlex.quote(str(platform))]
        command = f"{self._ctr} -n {shlex.quote(options.namespace)} images import {' '.join(flags)} -"
        process = await self._executor.start(command)
        try:
            try:
                await _write_archive(
                    process, source, blobs, root, options.name, self._progress, self._node, written
                )
            except NodeError:  # ctr stopped reading: it failed (it says why), or the connection went
                with contextlib.suppress(TimeoutError):
                    outcome = await asyncio.wait_for(process.wait(), _ENDED_SECONDS)
                    if outcome.stderr.strip():
                        raise PushFailed(
                            f"ctr import failed on the node: {outcome.stderr.strip()[-800:]}"
                        ) from None
                raise
            outcome = await process.wait()
        finally:
            process.close()
        if outcome.status != 0 and not outcome.stderr.strip():
            raise ConnectionLost("the connection to the node went away during ctr import")
        if outcome.status != 0:
            raise _failed(outcome)

    async def _wait_for_cri(self, name: str) -> bool:
        """CRI labels the images it indexed (``io.cri-containerd.image=managed``)."""
        deadline = asyncio.get_running_loop().time() + _CRI_WAIT_SECONDS
        while True:
            out = await self._run_ctr(CRI_NAMESPACE, f"images ls name=={shlex.quote(name)}")
            if "io.cri-containerd.image=managed" in out:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)


def _failed(outcome: ExecResult) -> PushFailed:
    return PushFailed(f"ctr import failed on the node: {outcome.stderr.strip()[-800:]}")


async def _write_archive(
    process: ExecProcess,
    source: ImageSource,
    blobs: tuple[BlobStep, ...],
    root: Descriptor,
    name: str,
    progress: ProgressSink,
    node: str,
    written: Written,
) -> None:
    """Stream an OCI archive into ``process``: layout files, then each missing blob (``written``
    counts what goes out; a blob is resent whole by a retry, there is no resuming inside it)."""
    entry = root.to_json()
    entry["annotations"] = {NAME_ANNOTATION: name}
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    for member, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
        await _send(process, _header(member, len(data)) + data + _padding(len(data)))
    for step in blobs:
        handle = progress.blob_started(node, step.desc.digest, step.desc.size, 0)
        await _send(process, _header(f"blobs/{step.desc.digest.replace(':', '/')}", step.desc.size))

        def advance(n: int, handle: object = handle) -> None:
            written.bytes += n
            progress.advance(handle, n)

        sent = await _send_blob(process, source, step, advance)
        if sent != step.desc.size:
            raise PushFailed(f"source ended early while sending {step.desc.digest}")
        await _send(process, _padding(sent))
        progress.blob_done(handle)
        written.blobs.add(step.desc.digest)
    await _send(process, b"\0" * (2 * _BLOCK))
    process.stdin.write_eof()


async def _send_blob(
    process: ExecProcess, source: ImageSource, step: BlobStep, advance: Callable[[int], None]
) -> int:
    sent = 0
    if step.data is not None:
        await _send(process, step.data)
        advance(len(step.data))
        return len(step.data)
    with source.open_blob(step.desc) as stream:
        while sent < step.desc.size:
            data = await asyncio.to_thread(stream.read, min(_CHUNK, step.desc.size - sent))
            if not data:
                break
            await _send(process, data)
            sent += len(data)
            advance(len(data))
    return sent


async def _send(process: ExecProcess, data: bytes) -> None:
    try:
        process.stdin.write(data)
        await process.stdin.drain()
    except (OSError, BrokenPipeError) as err:
        raise ConnectionLost(f"ctr import on the node stopped reading: {err}") from err


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)
