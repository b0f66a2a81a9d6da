"""nodeload's pytest plugin: throwaway nodes and byte-checked pushes for your own pipeline's tests.

Registered through the ``pytest11`` entry point, so ``pip install 'nodeload[sandbox]'`` is all it
takes; nothing starts unless a test asks for a fixture::

    def test_my_image_lands(nodeload_sandbox, nodeload_push):
        pushed = nodeload_push("myapp:ci")
        pushed.assert_bytes()                               # reported bytes == the nodes' NICs
        for node in nodeload_sandbox.nodes:
            assert_on_node(node, "docker.io/library/myapp:ci", prints="hello")

Fixtures:

- ``nodeload_sandbox``: a :class:`~nodeload.sandbox.Sandbox` of throwaway nodes (sshd +
  containerd + CRI). Its size is the ini option ``nodeload_nodes`` (default 2) and its scope
  ``nodeload_sandbox_scope`` (``session`` by default: the nodes are shared, so tests push
  distinct images; ``function`` gives each test fresh nodes, and then the marker
  ``@pytest.mark.nodeload_sandbox(nodes=3, variants=[NodeVariant(...)])`` shapes them).
- ``nodeload_push``: ``nodeload_push(IMAGE, *aliases, **PushOptions fields)`` pushes through the
  library API to the sandbox (every node by default) and returns a :class:`Pushed`: the
  per-node results with the nodes' own counters before and after, to assert on.
- ``nodeload_compose``: the nodes of ``nodeload sandbox compose``'s compose file, brought up by
  pytest-docker's ``docker_services`` (see :mod:`nodeload.sandbox.compose`).
- ``nodeload_cluster``: a real Kubernetes (:class:`~nodeload.sandbox.k8s.Cluster`) of
  ``nodeload_cluster_nodes`` kubelet nodes (default 2), one per session. Its binaries are built
  once from Debian's source package (10-15 minutes the first time, then cached): when a
  collected test uses the fixture and they are not built yet, the build starts in the background
  as soon as collection ends, and the first test that needs the cluster waits for it (its
  pytest-timeout is raised to :data:`BUILD_TIMEOUT_S`).

Sandbox containers carry their session's label and the owning process; they are removed when
the fixture ends, and those of a session that crashed are swept when the next one starts
(no Ryuk container needed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nodeload.quiet import warning_filter_lines

if TYPE_CHECKING:
    from nodeload.report import NodeResult
    from nodeload.sandbox import Sandbox
    from nodeload.sandbox.assertions import NodeState
    from nodeload.sandbox.compose import ComposeNodes
    from nodeload.sandbox.k8s import Binaries, Cluster

_SCOPES = ("session", "package", "module", "class", "function")
# How long the first test using nodeload_cluster may wait for a cold build of Kubernetes.
BUILD_TIMEOUT_S = 2700
_BUILD = pytest.StashKey["subprocess.Popen[bytes] | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("nodeload_nodes", "nodes in nodeload_sandbox (default 2)", default="2")
    parser.addini(
        "nodeload_sandbox_scope",
        "scope of nodeload_sandbox: session (default) ... function",
        default="session",
    )
    parser.addini("nodeload_cluster_nodes", "kubelet nodes in nodeload_cluster (default 2)", default="2")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Iterator[None]:
    """Keep the dependencies' deprecation notices out of the warnings summary from the start:
    pytest replaces the warning filters while it imports conftest files (which may import
    asyncssh) and around every test, with its own ``filterwarnings`` lines."""
    _quiet(early_config)
    return (yield)


def _quiet(config: pytest.Config) -> None:
    present = config.getini("filterwarnings")
    for line in warning_filter_lines():
        if line not in present:
            config.addinivalue_line("filterwarnings", line)


def pytest_configure(config: pytest.Config) -> None:
    _quiet(config)  # loaded from a conftest's pytest_plugins, after the initial conftests
    config.addinivalue_line(
        "markers",
        "nodeload_sandbox(nodes=2, variants=None): the nodes nodeload_sandbox starts for this test "
        "(with nodeload_sandbox_scope = function)",
    )


def _scope(fixture_name: str, config: pytest.Config) -> str:
    scope = str(config.getini("nodeload_sandbox_scope"))
    if scope not in _SCOPES:
        raise pytest.UsageError(f"nodeload_sandbox_scope = {scope!r}: one of {', '.join(_SCOPES)}")
    return scope


@pytest.fixture(scope=_scope)  # type: ignore[arg-type]
def nodeload_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Throwaway nodes reachable over SSH (``sandbox.ssh_config_path``, aliases ``node-1``...)."""
    try:
        from nodeload.sandbox import Sandbox, sweep_leftovers
    except ImportError as err:  # the plugin is registered with nodeload; the sandbox needs its extra
        raise pytest.UsageError(f"nodeload_sandbox needs pip install 'nodeload[sandbox]' ({err})") from err

    nodes: int | Sequence[Any] = int(request.config.getini("nodeload_nodes"))
    marker = request.node.get_closest_marker("nodeload_sandbox")
    if marker is not None:
        if request.scope != "function":
            raise pytest.UsageError(
                "@pytest.mark.nodeload_sandbox shapes a test's own nodes: set nodeload_sandbox_scope = "
                f"function (it is {request.scope})"
            )
        nodes = marker.kwargs.get("variants") or marker.kwargs.get("nodes", nodes)
    sweep_leftovers()  # containers of sessions that crashed
    with Sandbox(nodes) as sandbox:
        yield sandbox


def _uses_cluster(item: pytest.Item) -> bool:
    return "nodeload_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first test that needs a cluster the time a cold build of Kubernetes takes."""
    first = next((item for item in items if _uses_cluster(item)), None)
    if first is None or not _binaries_missing():
        return
    marker = first.get_closest_marker("timeout")
    if marker is None or (marker.args and float(marker.args[0]) < BUILD_TIMEOUT_S):
        first.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building Kubernetes in the background when a collected test will need a cluster."""
    config = session.config
    if config.stash.get(_BUILD, None) is not None or not any(_uses_cluster(i) for i in session.items):
        return
    if not _binaries_missing() or _is_xdist_worker(config):
        return
    log_path = _build_log()
    if log_path is None:
        return
    with open(log_path, "ab") as log:
        # Its own session: stopped as a group (go and its compilers) if the run ends first.
        config.stash[_BUILD] = subprocess.Popen(
            [sys.executable, "-m", "nodeload.sandbox.k8s.build", "--nice", "10"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop a background build the run did not wait for (no test needed it in the end)."""
    build = config.stash.get(_BUILD, None)
    if build is not None and build.poll() is None:
        os.killpg(build.pid, signal.SIGTERM)
        try:
            build.wait(60)  # it removes its build tree on the way out
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()


def _binaries_missing() -> bool:
    try:
        from nodeload.sandbox.k8s import cached_binaries
    except ImportError:  # no sandbox extra: the fixture says so when used
        return False
    try:
        return cached_binaries() is None
    except Exception:  # no usable cache directory: the fixture reports it
        return False


def _build_log() -> str | None:
    try:
        from nodeload.sandbox.k8s.build import build_log_path

        path = build_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path.with_name(path.name + ".background"))
    except Exception:
        return None


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _wait_for_binaries(config: pytest.Config) -> Binaries:
    from nodeload.sandbox import SandboxError
    from nodeload.sandbox.k8s import cached_binaries, ensure_binaries

    build = config.stash.get(_BUILD, None)
    if build is not None:
        build.wait()
        found = cached_binaries()
        if found is None:
            log = _build_log() or ""
            tail = Path(log).read_text(errors="replace")[-3000:] if log and os.path.exists(log) else ""
            raise SandboxError(f"the background build of Kubernetes failed ({build.returncode}):\n{tail}")
        return found
    return ensure_binaries()


@pytest.fixture(scope="session")
def nodeload_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A real Kubernetes: the control plane on this machine, kubelet in sandbox node containers
    (``cluster.kubeconfig``, ``cluster.ssh_config_path``, ``cluster.node_names``)."""
    try:
        from nodeload.sandbox import sweep_leftovers
        from nodeload.sandbox.k8s import Cluster, sweep_clusters
    except ImportError as err:
        raise pytest.UsageError(f"nodeload_cluster needs pip install 'nodeload[sandbox]' ({err})") from err

    binaries = _wait_for_binaries(request.config)
    sweep_clusters()  # clusters of sessions that crashed
    sweep_leftovers()
    nodes = int(request.config.getini("nodeload_cluster_nodes"))
    with Cluster(nodes, binaries=binaries) as cluster:
        yield cluster


@dataclass
class Pushed:
    """One push to sandbox nodes, with each node's own view before and after."""

    results: list[NodeResult]
    before: dict[str, NodeState] = field(default_factory=dict)
    after: dict[str, NodeState] = field(default_factory=dict)

    def result(self, alias: str) -> NodeResult:
        """The result of node ``alias`` (one image pushed)."""
        return next(r for r in self.results if r.node == alias)

    def assert_ok(self) -> None:
        """Every node got the image."""
        failed = {r.node: r.error for r in self.results if not r.ok}
        assert not failed, f"the push failed on {failed}"

    def assert_bytes(self, *, max_over: float = 0.05) -> None:
        """Every node's reported bytes match its NIC and content store (see assert_bytes)."""
        from nodeload.sandbox.assertions import assert_bytes

        for result in self.results:
            assert_bytes(result, self.before[result.node], self.after[result.node], max_over=max_over)

    def assert_only_changed_layers(self) -> None:
        """Every node was sent exactly the blobs it lacked."""
        from nodeload.sandbox.assertions import assert_only_changed_layers

        for result in self.results:
            assert_only_changed_layers(self.before[result.node], self.after[result.node], result)


class Pusher:
    """``nodeload_push``: pushes to the nodes of a sandbox through the library API."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, image: str, *aliases: str, **options: Any) -> Pushed:
        """Push ``image`` to ``aliases`` (default: every node), with ``PushOptions.of(**options)``."""
        from nodeload.api import push
        from nodeload.options import PushOptions
        from nodeload.sandbox.assertions import node_state
        from nodeload.transports.ssh_connect import SSHOptions

        targets = list(
            aliases
            or [a for a, n in zip(self.sandbox.aliases, self.sandbox.nodes, strict=True) if n.variant.sshd]
        )
        before = {alias: node_state(self.sandbox.node(alias)) for alias in targets}
        ssh = SSHOptions(ssh_config=self.sandbox.ssh_config_path)
        results = push(image, targets, PushOptions.of(ssh=ssh, **options))
        after = {alias: node_state(self.sandbox.node(alias)) for alias in targets}
        return Pushed(results, before, after)


@pytest.fixture()
def nodeload_push(nodeload_sandbox: Sandbox) -> Pusher:
    """``nodeload_push(IMAGE, *aliases, **options) -> Pushed`` against ``nodeload_sandbox``."""
    return Pusher(nodeload_sandbox)


@pytest.fixture()
def nodeload_compose(request: pytest.FixtureRequest) -> ComposeNodes:
    """The nodes of ``nodeload sandbox compose``'s file, up through pytest-docker's ``docker_services``."""
    from nodeload.sandbox.compose import ComposeNodes

    services = request.getfixturevalue("docker_services")  # pytest-docker: starts the compose file
    compose_file = request.getfixturevalue("docker_compose_file")
    return ComposeNodes.ready(services, compose_file)
