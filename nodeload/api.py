"""nodeload as a library: the calls the CLI, ``nodeload serve`` and users' scripts make.

Example:
    >>> import nodeload
    >>> results = nodeload.push("myapp:dev", ["root@10.0.0.11", "root@10.0.0.12"])
    >>> all(r.ok for r in results)
    True
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nodeload.containerd.client import DEFAULT_TIMEOUT
from nodeload.early import LayerListener
from nodeload.errors import UsageError
from nodeload.fanout import DEFAULT_PARALLEL, DEFAULT_RETRIES, ImageJob, NodeJob, RetryPolicy, push_all
from nodeload.holdings import NodesView
from nodeload.nodes.listed import parse_node
from nodeload.nodes.spec import NodeSpec
from nodeload.platforms import Platform
from nodeload.progress import NullProgress, ProgressSink
from nodeload.reference import parse_reference
from nodeload.report import NodeResult
from nodeload.session import Session, run, transport_for
from nodeload.sources import open_source, parse_source
from nodeload.sources.base import SourceOptions
from nodeload.sources.naming import name_on_nodes
from nodeload.targets.base import CRI_NAMESPACE, PreparedImage, TargetOptions
from nodeload.targets.containerd import open_containerd
from nodeload.tasks import in_thread
from nodeload.text import printable
from nodeload.transports.ssh import SSHOptions

log = logging.getLogger("nodeload")

# containerd's own rule for namespace names.
_NAMESPACE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")

Notify = Callable[[str], None]


@dataclass(frozen=True)
class PushOptions:
    """How to push: the same for every image and node of a run (a node may override the namespace).

    Attributes:
        namespace: containerd namespace: ``k8s.io`` (kubelet/CRI), ``default`` (nerdctl),
            ``moby`` (Docker's containerd image store).
        name: The image name to create on the nodes (one image only); default: the source's own.
        platform: Pick this platform of a multi-platform image (default: each node's own).
        containerd_socket: Use only this socket on every node (default: the node's hints, then
            the usual places).
        snapshotter: Unpack into this snapshotter (default: CRI's, else overlayfs).
        unpack: Unpack layers (False: store the content only).
        timeout: Seconds containerd may leave a call unanswered or an upload without progress.
        parallel: Nodes worked on at once.
        retries: Reconnections per node when its session is lost mid-push (the SSH connection
            dropped, containerd restarted); each resumes where the last stopped.
        seeds: Push to this many seed nodes (of the nodes with a registry mirror, those with
            the least of the images to receive), and have every other node whose containerd
            pulls through a mirror (Spegel, k3s's embedded registry) pull from its peers
            instead; 0: push to every node. None: 1 seed when there are several nodes (nodes
            without a mirror are pushed to at once, as without seeds). Given explicitly, a
            Docker-engine image is exported with ``docker save`` (the engine's own push would
            reach every node).
        mirror_check: Read each node's mirror configuration before pulling (False: trust it).
        ssh: How SSH nodes are reached.
        source_tls_verify: Verify a ``docker://`` registry's certificate (skopeo's
            ``--src-tls-verify``); False also allows plain HTTP.
        source_socket: The socket of the local containerd ``containerd:`` images are read from
            (default: ``$CONTAINERD_ADDRESS``, else ``/run/containerd/containerd.sock``).
        source_namespace: Its namespace (default: ``$CONTAINERD_NAMESPACE``, else ``default``).
        target: What is written on the nodes: ``containerd`` (kubelet's, nerdctl's...) or ``docker``
            (a remote Docker Engine, through its socket; its containerd store through ``moby``).
        export: How a Docker-engine image leaves the engine: ``save`` (``docker save``, nodeload
            compresses and caches the layers), ``push`` (the engine's own ``docker push`` into an
            endpoint over the nodes: only changed layers leave it), or ``auto`` (push, unless a node
            holds some of the image's layers in a form push would send again, or the engine
            cannot reach loopback).
    """

    namespace: str = CRI_NAMESPACE
    name: str | None = None
    platform: Platform | None = None
    containerd_socket: str | None = None
    snapshotter: str | None = None
    unpack: bool = True
    timeout: float = DEFAULT_TIMEOUT
    parallel: int = DEFAULT_PARALLEL
    retries: int = DEFAULT_RETRIES
    seeds: int | None = None
    mirror_check: bool = True
    ssh: SSHOptions = field(default_factory=SSHOptions)
    export: str = "auto"
    target: str = "containerd"
    source_tls_verify: bool = True
    source_socket: str | None = None
    source_namespace: str | None = None

    def check(self, images: Sequence[str]) -> None:
        """Raise UsageError for settings that cannot work."""
        if not _NAMESPACE.fullmatch(self.namespace):
            raise UsageError(
                f"invalid namespace {self.namespace!r}: containerd namespaces are letters and digits "
                "separated by . _ or - (k8s.io, default, moby)"
            )
        if self.name and len(images) > 1:
            raise UsageError("--name names one image; it cannot be used when pushing several")
        if self.parallel < 1:
            raise UsageError(f"--parallel must be at least 1, not {self.parallel}")
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, not {self.retries}")
        if self.seeds is not None and self.seeds < 0:
            raise UsageError(f"--seeds must be 0 or more, not {self.seeds}")
        if self.export not in ("auto", "save", "push"):
            raise UsageError(f"--export must be auto, save or push, not {self.export!r}")
        if self.target not in ("containerd", "docker"):
            raise UsageError(f"--target must be containerd or docker, not {self.target!r}")
        if self.target == "docker" and self.export == "push":
            raise UsageError("--export push writes into containerd; with --target docker use save")
        for hop in (self.ssh.jump or "").split(","):
            if hop.strip():
                parse_node(hop.strip().removeprefix("ssh://"))  # a UsageError names what is wrong


def push(
    images: str | Sequence[str],
    nodes: Sequence[NodeSpec | str],
    options: PushOptions | None = None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    session: Session | None = None,
) -> list[NodeResult]:
    """Push each image to each node, sending only what a node lacks.

    Args:
        images: Sources as the CLI takes them: ``myapp:dev``, ``oci:DIR:TAG``,
            ``docker-archive:FILE``...
        nodes: Node descriptions, or ``[USER@]HOST[:PORT]`` strings as ``--node`` takes them.
        options: How to push (defaults: k8s.io, unpacked, verified host keys).
        progress: Receives transfer events (default: nothing shown).
        notify: Receives warnings and notices meant for a person (default: logged).
        session: Runs the push, keeping what it keeps (its loop; the nodes' connections, if it
            keeps them) for the next call; default: one of its own, closed after the push.

    Returns:
        One result per (image, node), image by image, nodes in the order given.

    Raises:
        UsageError: for arguments that cannot work (nothing was sent).
    """
    coroutine = push_async(images, nodes, options, progress=progress, notify=notify, session=session)
    return run(session, coroutine)


async def push_async(
    images: str | Sequence[str],
    nodes: Sequence[NodeSpec | str],
    options: PushOptions | None = None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    session: Session | None = None,
) -> list[NodeResult]:
    """:func:`push`, for callers already inside an event loop (``session``'s, if given)."""
    texts = [images] if isinstance(images, str) else list(images)
    options = options or PushOptions()
    say = notify or log.warning
    if not texts:
        raise UsageError("no image to push")
    options.check(texts)
    specs = [parse_node(n) if isinstance(n, str) else n for n in nodes]
    if not specs:
        raise UsageError("no target node")
    node_jobs = [NodeJob(spec, transport_for(spec, options.ssh, session)) for spec in specs]
    # Asked for seeds, the engine's docker push (which answers for every node at once) gives way.
    seeding = options.export == "auto" and bool(options.seeds) and len(specs) > 1
    with contextlib.ExitStack() as stack, contextlib.ExitStack() as spools:
        known = session.engines_reaching_loopback if session is not None else set()
        image_jobs = [_image_job(text, options, stack, spools, say, seeding, known) for text in texts]
        if options.target == "docker":
            opener = partial(
                _docker_engine_opener(), socket=options.containerd_socket, timeout=options.timeout
            )
        else:
            held = session.leases if session is not None else set()
            opener = partial(
                open_containerd, socket=options.containerd_socket, timeout=options.timeout, held=held
            )
        return await push_all(
            image_jobs,
            node_jobs,
            opener,
            progress or NullProgress(),
            parallel=options.parallel,
            retry=RetryPolicy(options.retries, notify=say),
            seeds=(1 if len(node_jobs) > 1 else 0) if options.seeds is None else options.seeds,
            mirror_check=options.mirror_check,
        )


def _image_job(
    text: str,
    options: PushOptions,
    stack: contextlib.ExitStack,
    spools: contextlib.ExitStack,
    say: Notify,
    seeding: bool,
    known: set[str],
) -> ImageJob:
    """How one IMAGE is prepared: by the Docker engine's own push when it fits, else opened (and
    for an engine image, exported with ``docker save``) in a thread of its own."""

    async def opened(listener: LayerListener, nodes: NodesView) -> PreparedImage:
        return await in_thread(lambda: _prepare(text, options, stack, say, listener))

    engine = parse_source(text).scheme == "docker-daemon"
    if options.export == "push" and not engine:
        raise UsageError(f"--export push needs Docker-engine images; {text} is not one")
    if not engine or options.export == "save" or options.target != "containerd" or seeding:
        return ImageJob(text, opened, options.namespace)

    async def pushed(listener: LayerListener, nodes: NodesView) -> PreparedImage:
        image = await _prepare_by_engine(text, options, spools, say, listener, nodes, known)
        return image if image is not None else await opened(listener, nodes)

    return ImageJob(text, pushed, options.namespace, asks_nodes=True)


async def _prepare_by_engine(
    text: str,
    options: PushOptions,
    spools: contextlib.ExitStack,
    say: Notify,
    listener: LayerListener,
    nodes: NodesView,
    known: set[str],
) -> PreparedImage | None:
    """The image, as the engine's ``docker push`` delivers it; None when ``docker save`` fits
    better (said why, when it is news), unless ``--export push`` insists. ``known``: engines
    known to reach our loopback endpoint (the session's).

    Raises:
        UsageError: ``--export push`` cannot work with this engine or image.
        EngineCannotPush: the engine's push failed under ``--export push``.
    """
    from nodeload.dockerapi import engine_client
    from nodeload.sources import engine_push
    from nodeload.sources.layer_cache import LayerCache

    forced = options.export == "push"
    ref = parse_source(text).ref
    assert ref is not None
    client = engine_client()
    image = engine_push.inspect(client, text, ref, options.name)
    if image is None:
        if forced:
            raise UsageError(f"--export push: {text} is not an image of the Docker engine, pushable by tag")
        return None  # the save path says what is wrong with it
    unreachable = engine_push.unreachable_loopback(client, known)
    if unreachable:
        if forced:
            raise UsageError(f"--export push is not possible: {unreachable}")
        return None
    cache = LayerCache()
    query = engine_push.query_for(image, cache, unpacked=options.unpack, snapshotter=options.snapshotter)
    answers = await nodes.ask(query)
    pushed = engine_push.held_everywhere(image, answers)
    if pushed is None:
        resent = engine_push.resent_layer(image, cache, answers)
        if resent and not forced:
            say(f"exporting with docker save rather than docker push: {resent}")
            return None
        try:  # the uploads stay until the run ends (spools): a retry reads them
            pushed = await engine_push.push_from_engine(
                client, image, listener, spools, cache=cache, query=query, answers=answers
            )
        except engine_push.EngineCannotPush as err:
            if forced:
                raise
            say(f"exporting with docker save rather than docker push: {err}")
            return None
    target = _target_options(options, text, image.name, image.name_from_source, say)
    return PreparedImage(pushed.source, target, export=pushed.export)


def _docker_engine_opener() -> Callable[..., Any]:
    from nodeload.targets.docker_engine import open_docker_engine  # the docker SDK: only when used

    return open_docker_engine


def _prepare(
    text: str, options: PushOptions, stack: contextlib.ExitStack, say: Notify, listener: LayerListener
) -> PreparedImage:
    """Open one source (a ``docker save`` and compression, maybe) and settle its name."""
    source = stack.enter_context(
        open_source(
            text,
            listener=listener,
            options=SourceOptions(
                tls_verify=options.source_tls_verify,
                containerd_address=options.source_socket,
                containerd_namespace=options.source_namespace,
            ),
        )
    )
    name, from_source = name_on_nodes(options.name, text, source.reference)
    target = _target_options(options, text, name, from_source, say)
    return PreparedImage(
        source, target, export="docker-save" if parse_source(text).scheme == "docker-daemon" else None
    )


def _target_options(
    options: PushOptions, text: str, name: str, from_source: bool, say: Notify
) -> TargetOptions:
    """What is written for IMAGE ``text`` under ``name``; says where a name not given came from,
    and warns of ``:latest``."""
    if from_source:
        say(f"using the name {printable(name)} found inside {text} (--name sets another)")
    if parse_reference(name).floats:
        say(
            f"warning: {name} uses the :latest tag, so kubelet defaults to imagePullPolicy: Always "
            "and will try to pull it from a registry; push a specific tag, or set imagePullPolicy: "
            "IfNotPresent"
        )
    return TargetOptions(
        namespace=options.namespace,
        name=name,
        platform=options.platform,
        snapshotter=options.snapshotter,
        unpack=options.unpack,
        name_from_source=from_source,
    )
