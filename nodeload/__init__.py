"""nodeload: push container images straight into nodes' containerd, sending only what each node lacks.

The library API (the CLI is a thin layer over it)::

    import nodeload

    results = nodeload.push("myapp:dev", ["root@10.0.0.11", "root@10.0.0.12"])
    for r in results:
        print(r.node, r.status, r.bytes_sent)

Names are imported on first use, so ``import nodeload`` (and ``nodeload --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "NodeResult",
    "NodeSpec",
    "NodeloadError",
    "PushOptions",
    "SSHOptions",
    "UsageError",
    "push",
    "push_async",
]

_WHERE = {
    "NodeResult": "nodeload.report",
    "NodeSpec": "nodeload.nodes.spec",
    "NodeloadError": "nodeload.errors",
    "PushOptions": "nodeload.api",
    "SSHOptions": "nodeload.transports.ssh",
    "UsageError": "nodeload.errors",
    "push": "nodeload.api",
    "push_async": "nodeload.api",
}

if TYPE_CHECKING:
    from nodeload.api import PushOptions, push, push_async
    from nodeload.errors import NodeloadError, UsageError
    from nodeload.nodes.spec import NodeSpec
    from nodeload.report import NodeResult
    from nodeload.transports.ssh import SSHOptions


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nodeload' has no attribute {name!r}")
