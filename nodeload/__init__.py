"""nodeload: push container images straight into nodes' containerd, sending only what each node lacks.

The library API (the CLI is a thin layer over it)::

    import nodeload

    results = nodeload.push("myapp:dev", ["root@10.0.0.11", "root@10.0.0.12"])
    for r in results:
        print(r.node, r.status, r.bytes_sent)

The README's "Library" section shows the rest: options by layer, choosing nodes as the
CLI does, a session kept across pushes, ``serve``, ``collect_garbage``, ``list_images`` and
``remove_images``.

Names are imported on first use, so ``import nodeload`` (and ``nodeload --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nodeload.quiet import quiet_dependencies

__version__ = "0.1.0"

# Every way in (the command line, ``import nodeload``, the pytest plugin) passes here first.
quiet_dependencies()

# Public name -> the module that defines it.
_WHERE = {
    # pushing
    "push": "nodeload.api",
    "push_async": "nodeload.api",
    "PushOptions": "nodeload.options",
    "SourceOptions": "nodeload.sources.base",
    "SSHOptions": "nodeload.transports.ssh_connect",
    "StoreOptions": "nodeload.options",
    "FanoutOptions": "nodeload.options",
    "Session": "nodeload.session",
    "NodeResult": "nodeload.report",
    "Status": "nodeload.report",
    "ProgressSink": "nodeload.progress",
    # images
    "ImageSource": "nodeload.image",
    "open_source": "nodeload.sources",
    "Platform": "nodeload.platforms",
    # nodes
    "NodeSpec": "nodeload.nodes.spec",
    "NodeSelection": "nodeload.nodes.select",
    "select_nodes": "nodeload.nodes.select",
    # the other commands
    "serve": "nodeload.api",
    "ServeOptions": "nodeload.registry.server",
    "ServeOutcome": "nodeload.registry.server",
    "collect_garbage": "nodeload.api",
    "GcOptions": "nodeload.gc",
    "GcResult": "nodeload.gc",
    "list_images": "nodeload.api",
    "ImagesOptions": "nodeload.node_images",
    "ImagesReport": "nodeload.node_images",
    "remove_images": "nodeload.api",
    "RemoveOptions": "nodeload.image_removal",
    "RemoveResult": "nodeload.image_removal",
    # errors
    "NodeloadError": "nodeload.errors",
    "UsageError": "nodeload.errors",
}

__all__ = [
    "FanoutOptions",
    "GcOptions",
    "GcResult",
    "ImageSource",
    "ImagesOptions",
    "ImagesReport",
    "NodeResult",
    "NodeSelection",
    "NodeSpec",
    "NodeloadError",
    "Platform",
    "ProgressSink",
    "PushOptions",
    "RemoveOptions",
    "RemoveResult",
    "SSHOptions",
    "ServeOptions",
    "ServeOutcome",
    "Session",
    "SourceOptions",
    "Status",
    "StoreOptions",
    "UsageError",
    "collect_garbage",
    "list_images",
    "open_source",
    "push",
    "push_async",
    "remove_images",
    "select_nodes",
    "serve",
]

if TYPE_CHECKING:
    from nodeload.api import collect_garbage, list_images, push, push_async, remove_images, serve
    from nodeload.errors import NodeloadError, UsageError
    from nodeload.gc import GcOptions, GcResult
    from nodeload.image import ImageSource
    from nodeload.image_removal import RemoveOptions, RemoveResult
    from nodeload.node_images import ImagesOptions, ImagesReport
    from nodeload.nodes.select import NodeSelection, select_nodes
    from nodeload.nodes.spec import NodeSpec
    from nodeload.options import FanoutOptions, PushOptions, StoreOptions
    from nodeload.platforms import Platform
    from nodeload.progress import ProgressSink
    from nodeload.registry.server import ServeOptions, ServeOutcome
    from nodeload.report import NodeResult, Status
    from nodeload.session import Session
    from nodeload.sources import open_source
    from nodeload.sources.base import SourceOptions
    from nodeload.transports.ssh_connect import SSHOptions


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nodeload' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
