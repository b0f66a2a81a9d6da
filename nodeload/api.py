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
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from nodeload.early import LayerListener
from nodeload.errors import UsageError
from nodeload.fanout import ImageJob, NodeJob, RetryPolicy, push_all
from nodeload.holdings import NodesView
from nodeload.image import ImageSource
from nodeload.nodes.listed import parse_node
from nodeload.nodes.spec import NodeSpec
from nodeload.options import PushOptions
from nodeload.progress import NullProgress, ProgressSink
from nodeload.reference import parse_reference
from nodeload.report import NodeResult
from nodeload.session import Session, run, transport_for
from nodeload.sources import open_source, parse_source
from nodeload.sources.naming import name_on_nodes
from nodeload.stores.base import PreparedImage, WriteOptions
from nodeload.stores.containerd import open_containerd
from nodeload.tasks import in_thread
from nodeload.text import printable
from nodeload.wording import setting

if TYPE_CHECKING:  # imported when called: push alone needs none of them
    from nodeload.gc import GcOptions, GcResult
    from nodeload.image_removal import RemoveOptions, RemoveResult
    from nodeload.node_images import ImagesOptions, ImagesReport
    from nodeload.registry.server import ServeOptions, ServeOutcome

log = logging.getLogger("nodeload")

Notify = Callable[[str], None]


# An IMAGE: text as the CLI takes it (``oci:DIR:TAG``...), or a source already open.
Image = str | ImageSource


def push(
    images: Image | Sequence[Image],
    nodes: Sequence[NodeSpec | str],
    options: PushOptions | None = None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    session: Session | None = None,
) -> list[NodeResult]:
    """Push each image to each node, sending only what a node lacks.

    Args:
        images: Sources as the CLI takes them (``myapp:dev``, ``oci:DIR:TAG``,
            ``docker-archive:FILE``...), or sources already open (:func:`nodeload.open_source`,
            or any :class:`~nodeload.image.ImageSource`; the caller closes them).
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
    images: Image | Sequence[Image],
    nodes: Sequence[NodeSpec | str],
    options: PushOptions | None = None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    session: Session | None = None,
) -> list[NodeResult]:
    """:func:`push`, for callers already inside an event loop (``session``'s, if given)."""
    texts: list[Image] = (
        list(images) if isinstance(images, Sequence) and not isinstance(images, str) else [images]
    )
    options = options or PushOptions()
    say = notify or log.warning
    if not texts:
        raise UsageError("no image to push")
    options.check(len(texts))
    specs = _specs(nodes)
    await _check_local_images(texts)
    node_jobs = [NodeJob(spec, transport_for(spec, options.ssh, session)) for spec in specs]
    try:
        return await _push_jobs(texts, specs, node_jobs, options, progress, say, session)
    finally:
        if session is not None:
            session.give_back(job.transport for job in node_jobs)


async def _push_jobs(
    texts: list[Image],
    specs: list[NodeSpec],
    node_jobs: list[NodeJob],
    options: PushOptions,
    progress: ProgressSink | None,
    say: Notify,
    session: Session | None,
) -> list[NodeResult]:
    # Asked for seeds, the engine's docker push (which answers for every node at once) gives way.
    seeding = options.source.export == "auto" and bool(options.fanout.seeds) and len(specs) > 1
    with contextlib.ExitStack() as stack, contextlib.ExitStack() as spools:
        known = session.engines_reaching_loopback if session is not None else set()
        image_jobs = [_image_job(text, options, stack, spools, say, seeding, known) for text in texts]
        if options.store.kind == "docker":
            opener = partial(
                _docker_engine_opener(), socket=options.store.socket, timeout=options.store.timeout
            )
        else:
            held = session.leases if session is not None else set()
            opener = partial(
                open_containerd, socket=options.store.socket, timeout=options.store.timeout, held=held
            )
        return await push_all(
            image_jobs,
            node_jobs,
            opener,
            progress or NullProgress(),
            parallel=options.fanout.parallel,
            retry=RetryPolicy(options.fanout.retries, notify=say),
            seeds=(1 if len(node_jobs) > 1 else 0) if options.fanout.seeds is None else options.fanout.seeds,
            mirror_check=options.fanout.mirror_check,
        )


def serve(
    nodes: Sequence[NodeSpec | str],
    command: Sequence[str],
    options: ServeOptions | None = None,
    *,
    progress: ProgressSink | None = None,
    notify: Notify | None = None,
    ready: Callable[[str, dict[str, str]], None] | None = None,
) -> ServeOutcome:
    """Serve the nodes as one registry on loopback while ``command`` runs (``docker push``,
    ``skopeo copy``, ``crane``...: it finds the address and a login in its environment), then
    stop; what every node took is in the outcome.

    Raises:
        UsageError: no node, no command, or a non-loopback listen address.
        NodeloadError: no node could be reached.
    """
    from nodeload.registry.server import ServeOptions, serve_async

    specs = _specs(nodes)
    if not command:
        raise UsageError("no command to serve the nodes to")
    running = serve_async(
        specs, options or ServeOptions(), command, progress=progress, notify=notify, ready=ready
    )
    return run(None, running)


def collect_garbage(
    nodes: Sequence[NodeSpec | str], options: GcOptions | None = None, *, session: Session | None = None
) -> list[GcResult]:
    """Reclaim what interrupted runs left on the nodes (``nodeload gc``): one result per node.

    Raises:
        UsageError: no node.
    """
    from nodeload.gc import GcOptions, collect

    return run(session, collect(_specs(nodes), options or GcOptions(), session))


async def _check_local_images(texts: Sequence[Image]) -> None:
    """Fail before any node is contacted when an image of the local Docker engine is not there
    (a typo would otherwise fail on every node, after connecting to each).

    Raises:
        LocalImageNotFound: naming the closest local names.
    """
    specs = [parse_source(text) for text in texts if isinstance(text, str)]
    refs = [spec.ref for spec in specs if spec.scheme == "docker-daemon" and spec.ref is not None]
    if refs:
        from nodeload.sources.docker_daemon import require_image  # the docker SDK: only when used

        for ref in refs:
            await in_thread(partial(require_image, ref))


def list_images(
    names: Sequence[str] | None,
    nodes: Sequence[NodeSpec | str],
    options: ImagesOptions | None = None,
    *,
    session: Session | None = None,
) -> ImagesReport:
    """What the nodes hold of each image name (``nodeload images``), read-only.

    Args:
        names: Image names as push names them (``app:dev`` is ``docker.io/library/app:dev``);
            None or empty: every image of the namespace.
        nodes: Node descriptions, or ``[USER@]HOST[:PORT]`` strings.

    Returns:
        Each name across the reached nodes (which ID each holds, and which hold another ID than
        the newest copy), and each node's status.

    Raises:
        UsageError: no node, or a name that is not an image reference.
    """
    from nodeload.node_images import ImagesOptions, image_names, list_images_async

    wanted = image_names(names) if names else None
    return run(session, list_images_async(wanted, _specs(nodes), options or ImagesOptions(), session))


def remove_images(
    names: Sequence[str],
    nodes: Sequence[NodeSpec | str],
    options: RemoveOptions | None = None,
    *,
    session: Session | None = None,
) -> list[RemoveResult]:
    """Delete image records on the nodes so containerd reclaims what nothing else uses
    (``nodeload rm``); an image a container uses is refused unless ``options.force``.

    Returns:
        One result per node: each image's fate, and the bytes freed.

    Raises:
        UsageError: no node, no name, or a name that is not an image reference.
    """
    from nodeload.image_removal import RemoveOptions, remove_images_async
    from nodeload.node_images import image_names

    if not names:
        raise UsageError("no image to remove")
    wanted = image_names(names)
    return run(session, remove_images_async(wanted, _specs(nodes), options or RemoveOptions(), session))


def _specs(nodes: Sequence[NodeSpec | str]) -> list[NodeSpec]:
    """Nodes given as specs or as ``--node`` text."""
    specs = [parse_node(n) if isinstance(n, str) else n for n in nodes]
    if not specs:
        raise UsageError("no node given")
    return specs


def _image_job(
    text: Image,
    options: PushOptions,
    stack: contextlib.ExitStack,
    spools: contextlib.ExitStack,
    say: Notify,
    seeding: bool,
    known: set[str],
) -> ImageJob:
    """How one IMAGE is prepared: by the Docker engine's own push when it fits, else opened (and
    for an engine image, exported with ``docker save``) in a thread of its own."""
    if not isinstance(text, str):
        return _opened_job(text, options, say)

    async def opened(listener: LayerListener, nodes: NodesView) -> PreparedImage:
        return await in_thread(lambda: _prepare(text, options, stack, say, listener))

    engine = parse_source(text).scheme == "docker-daemon"
    if options.source.export == "push" and not engine:
        raise UsageError(f"{setting('export', 'push')} needs Docker-engine images; {text} is not one")
    if not engine or options.source.export == "save" or options.store.kind != "containerd" or seeding:
        return ImageJob(text, opened, options.store.namespace)

    async def pushed(listener: LayerListener, nodes: NodesView) -> PreparedImage:
        image = await _prepare_by_engine(text, options, spools, say, listener, nodes, known)
        return image if image is not None else await opened(listener, nodes)

    return ImageJob(text, pushed, options.store.namespace, asks_nodes=True)


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

    forced = options.source.export == "push"
    ref = parse_source(text).ref
    assert ref is not None
    client = engine_client()
    image = engine_push.inspect(client, text, ref, options.store.name)
    if image is None:
        if forced:
            raise UsageError(
                f"{setting('export', 'push')}: {text} is not an image of the Docker engine, pushable by tag"
            )
        return None  # the save path says what is wrong with it
    unreachable = engine_push.unreachable_loopback(client, known)
    if unreachable:
        if forced:
            raise UsageError(f"{setting('export', 'push')} is not possible: {unreachable}")
        return None
    cache = LayerCache()
    store = options.store
    query = engine_push.query_for(image, cache, unpacked=store.unpack, snapshotter=store.snapshotter)
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


def _opened_job(source: ImageSource, options: PushOptions, say: Notify) -> ImageJob:
    """An IMAGE the caller opened: named by ``options.store.name``, else by its own reference
    (as a name found inside a source: it never repoints another image)."""
    if options.store.name:
        name, from_source = parse_reference(options.store.name).normalized(), False
    elif source.reference:
        name, from_source = parse_reference(source.reference).normalized(), True
    else:
        raise UsageError("the image source names no image: give the name to create (StoreOptions.name)")
    label = source.reference or type(source).__name__
    prepared = PreparedImage(source, _target_options(options, label, name, from_source, say))

    async def opened(listener: LayerListener, nodes: NodesView) -> PreparedImage:
        return prepared

    return ImageJob(label, opened, options.store.namespace)


def _docker_engine_opener() -> Callable[..., Any]:
    from nodeload.stores.docker_engine import open_docker_engine  # the docker SDK: only when used

    return open_docker_engine


def _prepare(
    text: str, options: PushOptions, stack: contextlib.ExitStack, say: Notify, listener: LayerListener
) -> PreparedImage:
    """Open one source (a ``docker save`` and compression, maybe) and settle its name."""
    source = stack.enter_context(
        open_source(
            text,
            listener=listener,
            options=options.source,
        )
    )
    name, from_source = name_on_nodes(options.store.name, text, source.reference)
    target = _target_options(options, text, name, from_source, say)
    return PreparedImage(
        source, target, export="docker-save" if parse_source(text).scheme == "docker-daemon" else None
    )


def _target_options(
    options: PushOptions, text: str, name: str, from_source: bool, say: Notify
) -> WriteOptions:
    """What is written for IMAGE ``text`` under ``name``; says where a name not given came from,
    and warns of ``:latest``."""
    if from_source:
        say(f"using the name {printable(name)} found inside {text} ({setting('name')} sets another)")
    if parse_reference(name).floats:
        say(
            f"warning: {name} uses the :latest tag, so kubelet defaults to imagePullPolicy: Always "
            "and will try to pull it from a registry; push a specific tag, or set imagePullPolicy: "
            "IfNotPresent"
        )
    return WriteOptions(
        namespace=options.store.namespace,
        name=name,
        platform=options.store.platform,
        snapshotter=options.store.snapshotter,
        unpack=options.store.unpack,
        name_from_source=from_source,
    )
