"""The kubeconfig node source against a stand-in API server (tests/fakes/kube_api.py)."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeload.errors import NodeSourceError, UsageError
from nodeload.nodes import kubernetes as kubernetes_source
from nodeload.nodes.kubernetes import (
    K3S_SOCKET,
    KubeSelection,
    context_name,
    kube_nodes,
    missing_address,
    node_problem,
    unsupported_runtime,
)
from nodeload.nodes.spec import ClusterMirror, NodeSpec
from nodeload.platforms import Platform
from tests.fakes.kube_api import (
    CONTROL_PLANE,
    MASTER,
    FakeKubeApi,
    KubeconfigContext,
    control_plane_taint,
    node,
    write_kubeconfig,
)
from tests.fakes.kube_spegel import SpegelPod, SpegelPods

pytestmark = pytest.mark.integration

CLUSTER = [
    node("cp-1", labels={CONTROL_PLANE: ""}, internal_ip="10.0.0.1", taints=[control_plane_taint()]),
    node("old-master", labels={MASTER: ""}, internal_ip="10.0.0.2"),
    node(
        "worker-1",
        labels={"tier": "web", "zone": "a"},
        internal_ip="10.0.1.1",
        external_ip="203.0.113.1",
        hostname="worker-1.example",
    ),
    node("worker-2", labels={"tier": "web", "zone": "b"}, internal_ip="10.0.1.2", arch="arm64"),
    node("gpu-1", labels={"tier": "gpu", "zone": "a", "accelerator": "nvidia"}, internal_ip="10.0.2.1"),
]
ALL = ["cp-1", "old-master", "worker-1", "worker-2", "gpu-1"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's kubeconfig nor a proxy may leak into a test."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(CLUSTER) as server:
        yield server


@pytest.fixture()
def dev(api: FakeKubeApi) -> KubeconfigContext:
    """A context whose user, alice, authenticates with a bearer token."""
    return api.token_context("dev", user="alice")


@pytest.fixture()
def admin(api: FakeKubeApi) -> KubeconfigContext:
    """A context whose user, kube-admin, authenticates with a client certificate."""
    return api.cert_context("admin", user="kube-admin", groups=["system:masters"])


@pytest.fixture()
def kubeconfig(tmp_path: Path, dev: KubeconfigContext, admin: KubeconfigContext) -> Path:
    """Contexts dev (current) and admin."""
    return write_kubeconfig(tmp_path / "kube" / "config", [dev, admin])


def names(specs: list[NodeSpec]) -> list[str]:
    return [s.name for s in specs]


def by_name(specs: list[NodeSpec]) -> dict[str, NodeSpec]:
    return {s.name: s for s in specs}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- choosing nodes ------------------------------------------------------------------------


def test_all_nodes_become_node_specs(kubeconfig: Path) -> None:
    specs = kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, ssh_user="ops"))
    assert names(specs) == ALL
    assert by_name(specs)["worker-1"] == NodeSpec(
        name="worker-1",
        address="10.0.1.1",
        user="ops",
        platform=Platform("linux", "amd64"),
        runtime="containerd://1.7.13",
    )


def test_names_pick_nodes_in_the_order_given(kubeconfig: Path) -> None:
    chosen = ("gpu-1", "worker-1", "gpu-1")
    specs = kube_nodes(KubeSelection(kubeconfig=kubeconfig, names=chosen))
    assert names(specs) == ["gpu-1", "worker-1"]


def test_unknown_names_are_listed(kubeconfig: Path) -> None:
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, names=("worker-1", "nope", "nada")))
    message = str(err.value)
    assert "no node named nope, nada in context 'dev'" in message
    assert "worker-1, worker-2" in message  # what does exist, to spot a typo


def test_unknown_names_echo_the_selector(kubeconfig: Path) -> None:
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, names=("gpu-1",), selector="tier=web"))
    assert str(err.value) == (
        "no node named gpu-1 in context 'dev' matching label selector 'tier=web' "
        "(nodes there: worker-1, worker-2)"
    )


def test_nodes_must_be_asked_for(api: FakeKubeApi, kubeconfig: Path) -> None:
    with pytest.raises(NodeSourceError, match=r"NodeSelection.all_nodes or NodeSelection.names"):
        kube_nodes(KubeSelection(kubeconfig=kubeconfig))
    with pytest.raises(NodeSourceError, match=r"not both"):
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, names=("gpu-1",)))
    assert api.requests == []  # refused before asking the server


def test_unknown_address_type_is_a_usage_error(api: FakeKubeApi, kubeconfig: Path) -> None:
    with pytest.raises(UsageError, match=r"InternalIP, ExternalIP, Hostname, name"):
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, address_type="InternalDNS"))
    assert api.requests == []


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["worker-1", "worker-2"]),
        ("tier==gpu", ["gpu-1"]),
        ("tier!=web", ["cp-1", "old-master", "gpu-1"]),
        ("zone in (a, b)", ["worker-1", "worker-2", "gpu-1"]),
        ("tier notin (web)", ["cp-1", "old-master", "gpu-1"]),
        ("accelerator", ["gpu-1"]),
        ("!tier", ["cp-1", "old-master"]),
        ("tier=web,zone=a", ["worker-1"]),
        ("kubernetes.io/arch=arm64", ["worker-2"]),
        (f"{CONTROL_PLANE},kubernetes.io/os in (linux,windows)", ["cp-1"]),
    ],
)
def test_selector_is_evaluated_by_the_server(
    api: FakeKubeApi, kubeconfig: Path, selector: str, expected: list[str]
) -> None:
    specs = kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, selector=selector))
    assert names(specs) == expected
    assert [(r.path, r.query) for r in api.requests] == [("/api/v1/nodes", {"labelSelector": selector})]


def test_no_selector_sends_none(api: FakeKubeApi, kubeconfig: Path) -> None:
    kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True))
    assert "labelSelector" not in api.requests[-1].query


def test_empty_selection_echoes_the_filters(kubeconfig: Path) -> None:
    selection = KubeSelection(
        kubeconfig=kubeconfig, all_nodes=True, selector="tier=db", exclude_control_plane=True
    )
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(selection)
    assert "no nodes in context 'dev'" in str(err.value)
    assert "label selector 'tier=db', control-plane nodes excluded" in str(err.value)


def test_empty_cluster_says_so(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.nodes.clear()
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True))
    assert str(err.value) == f"the cluster of context 'dev' (API server {api.url}) reports no nodes"


def test_invalid_selector_reports_the_servers_answer(kubeconfig: Path) -> None:
    with pytest.raises(NodeSourceError, match=r"answered 400 Bad Request: unable to parse requirement"):
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, selector="tier in web"))


def test_exclude_control_plane_drops_both_labels(kubeconfig: Path) -> None:
    specs = kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, exclude_control_plane=True))
    assert names(specs) == ["worker-1", "worker-2", "gpu-1"]


def test_named_control_plane_node_excluded_says_why(kubeconfig: Path) -> None:
    selection = KubeSelection(kubeconfig=kubeconfig, names=("old-master", "gone"), exclude_control_plane=True)
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(selection)
    assert "no node named gone" in str(err.value)
    assert "old-master: control-plane node(s), excluded as asked" in str(err.value)


# -- what each node becomes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address_type", "address"),
    [
        ("InternalIP", "10.0.1.1"),
        ("ExternalIP", "203.0.113.1"),
        ("Hostname", "worker-1.example"),
        ("name", "worker-1"),
    ],
)
def test_address_types(kubeconfig: Path, address_type: str, address: str) -> None:
    selection = KubeSelection(kubeconfig=kubeconfig, names=("worker-1",), address_type=address_type)
    [spec] = kube_nodes(selection)
    assert spec.address == address
    assert node_problem(spec, selection) is None


def test_missing_address_type_leaves_the_node_to_fail_alone(kubeconfig: Path) -> None:
    selection = KubeSelection(kubeconfig=kubeconfig, all_nodes=True, address_type="ExternalIP", reach="ssh")
    specs = by_name(kube_nodes(selection))
    assert specs["worker-1"].address == "203.0.113.1"
    assert missing_address(specs["worker-1"], selection) is None
    assert specs["worker-2"].address is None
    problem = node_problem(specs["worker-2"], selection)
    assert problem is not None
    assert problem.startswith("node worker-2 reports no ExternalIP address; choose another address type")


def test_a_node_without_an_address_is_reached_through_its_agent_by_default(kubeconfig: Path) -> None:
    selection = KubeSelection(kubeconfig=kubeconfig, all_nodes=True, address_type="ExternalIP")
    specs = by_name(kube_nodes(selection))
    assert (specs["worker-1"].reach, specs["worker-2"].reach) == ("ssh", "agent")
    access = specs["worker-2"].kube
    assert access is not None and access.agent_namespace == "nodeload"
    assert access.instead_of_ssh == "node worker-2 reports no ExternalIP address (for SSH)"
    assert node_problem(specs["worker-2"], selection) is None
    forced = by_name(kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True, reach="agent")))
    assert {spec.reach for spec in forced.values()} == {"agent"}


def test_k3s_and_rke2_nodes_try_the_k3s_socket_first(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.nodes = {
        n["metadata"]["name"]: n
        for n in [
            node("k3s-1", runtime="containerd://1.7.11-k3s2", kubelet="v1.28.5+k3s1", internal_ip="10.1.0.1"),
            node("rke2-1", runtime="containerd://1.7.11", kubelet="v1.28.5+rke2r1", internal_ip="10.1.0.2"),
            node("plain-1", runtime="containerd://1.7.13", internal_ip="10.1.0.3"),
        ]
    }
    specs = by_name(kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True)))
    assert specs["k3s-1"].sockets == (K3S_SOCKET,)
    assert specs["rke2-1"].sockets == (K3S_SOCKET,)
    assert specs["plain-1"].sockets == ()


def test_other_runtimes_are_returned_and_reported(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.nodes["worker-3"] = node("worker-3", runtime="cri-o://1.28.1", internal_ip="10.0.1.3")
    api.nodes["legacy-1"] = node("legacy-1", runtime="docker://24.0.7", internal_ip="10.0.1.4")
    selection = KubeSelection(kubeconfig=kubeconfig, names=("worker-3", "legacy-1", "worker-1"))
    worker3, legacy, worker1 = kube_nodes(selection)
    assert (worker3.runtime, worker3.address) == ("cri-o://1.28.1", "10.0.1.3")
    assert unsupported_runtime(worker3) == (
        "node worker-3 runs cri-o://1.28.1, not containerd; nodeload writes into containerd only"
    )
    assert node_problem(legacy, selection) == (
        "node legacy-1 runs docker://24.0.7, not containerd; nodeload writes into containerd only"
    )
    assert unsupported_runtime(worker1) is None


def test_architectures_give_platforms(kubeconfig: Path) -> None:
    specs = by_name(kube_nodes(KubeSelection(kubeconfig=kubeconfig, names=("worker-1", "worker-2"))))
    assert specs["worker-1"].platform == Platform("linux", "amd64")
    assert specs["worker-2"].platform == Platform("linux", "arm64", "v8")


# -- credentials and permissions -----------------------------------------------------------


def test_bearer_token_authenticates(api: FakeKubeApi, kubeconfig: Path) -> None:
    kube_nodes(KubeSelection(kubeconfig=kubeconfig, context="dev", names=("gpu-1",)))
    assert api.requests[-1].user == "alice"


def test_client_certificate_authenticates(api: FakeKubeApi, kubeconfig: Path) -> None:
    kube_nodes(KubeSelection(kubeconfig=kubeconfig, context="admin", names=("gpu-1",)))
    assert api.requests[-1].user == "kube-admin"


def test_certificate_files_resolve_next_to_the_kubeconfig(
    api: FakeKubeApi, admin: KubeconfigContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_kubeconfig(tmp_path / "elsewhere" / "config", [admin], cert_files=True)
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    assert names(kube_nodes(KubeSelection(kubeconfig=config, names=("gpu-1",)))) == ["gpu-1"]
    assert api.requests[-1].user == "kube-admin"


def test_rejected_token_names_the_user(api: FakeKubeApi, dev: KubeconfigContext, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", [dataclasses.replace(dev, token="stale")])
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    message = str(err.value)
    assert f"the API server {api.url} rejected the credentials of user 'alice'" in message
    assert f"in kubeconfig {config} (context 'dev'): Unauthorized" in message
    assert api.requests[-1].user is None


def test_missing_credentials_are_rejected(api: FakeKubeApi, dev: KubeconfigContext, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", [dataclasses.replace(dev, user="nobody", token=None)])
    with pytest.raises(NodeSourceError, match=r"rejected the credentials of user 'nobody'"):
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))


def test_forbidden_user_is_told_the_permission_needed(api: FakeKubeApi, kubeconfig: Path) -> None:
    api.forbidden.add("alice")
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, all_nodes=True))
    message = str(err.value)
    assert "user 'alice' (context 'dev') may not list nodes" in message
    assert "needs the `list` verb on `nodes`" in message
    assert 'User "alice" cannot list resource "nodes"' in message  # the server's own words


# -- kubeconfig and server problems --------------------------------------------------------


def test_unknown_context_lists_the_known_ones(kubeconfig: Path) -> None:
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=kubeconfig, context="prod", all_nodes=True))
    assert str(err.value) == f"context 'prod' is not in kubeconfig {kubeconfig}; known contexts: admin, dev"


def test_context_name(kubeconfig: Path) -> None:
    assert context_name(KubeSelection(kubeconfig=kubeconfig)) == "dev"
    assert context_name(KubeSelection(kubeconfig=kubeconfig, context="admin")) == "admin"


def test_no_current_context_asks_for_one(dev: KubeconfigContext, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", [dev], current=None)
    with pytest.raises(NodeSourceError, match=r"sets no current-context; choose a context \(known: dev\)"):
        context_name(KubeSelection(kubeconfig=config))


def test_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-config"
    with pytest.raises(NodeSourceError, match=f"kubeconfig {missing} does not exist"):
        kube_nodes(KubeSelection(kubeconfig=missing, all_nodes=True))


def test_missing_default_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(all_nodes=True))
    assert f"{tmp_path / 'home' / '.kube' / 'config'} does not exist and $KUBECONFIG is not set" in str(
        err.value
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "clusters: [\n  - name: x\n",
            "is not valid YAML: expected the node content, but found '-' at line 2, column 3",
        ),
        ("- just\n- a list\n", "is malformed: expected a mapping, found list"),
        ("", "sets no current-context"),  # as kubectl: an empty file is an empty config
        ("contexts:\n  dev: {}\n", "is malformed: 'contexts' must be a list of named entries"),
    ],
)
def test_malformed_kubeconfig_is_named(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "config"
    config.write_text(text)
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert str(err.value).startswith(f"kubeconfig {config} {problem}")


def test_context_with_undefined_cluster_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "contexts:\n- name: dev\n  context: {cluster: gone, user: alice}\ncurrent-context: dev\n"
    )
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert str(err.value).startswith(f"kubeconfig {config} is malformed: context 'dev' names cluster 'gone'")


def test_missing_certificate_file_is_reported_with_the_kubeconfig(
    admin: KubeconfigContext, tmp_path: Path
) -> None:
    config = write_kubeconfig(tmp_path / "config", [admin], cert_files=True)
    (tmp_path / "kube-admin.key").unlink()
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert str(err.value).startswith(f"kubeconfig {config}, context 'admin': ")
    assert "kube-admin.key" in str(err.value)


def test_unreachable_server_is_named_promptly(dev: KubeconfigContext, tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    config = write_kubeconfig(tmp_path / "config", [dataclasses.replace(dev, server=server)])
    started = time.monotonic()
    with pytest.raises(NodeSourceError) as err:
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert str(err.value) == (
        f"cannot reach the Kubernetes API server {server} (context 'dev'): Connection refused"
    )
    # Well under REQUEST_TIMEOUT: a refusal is final, neither waited out nor retried.
    assert time.monotonic() - started < 10


def test_silent_server_times_out(
    dev: KubeconfigContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes_source, "REQUEST_TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        config = write_kubeconfig(tmp_path / "config", [dataclasses.replace(dev, server=server)])
        with pytest.raises(NodeSourceError) as err:
            kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert str(err.value) == (
        f"cannot reach the Kubernetes API server {server} (context 'dev'): no answer within 0.5 s"
    )


def test_untrusted_server_certificate_is_a_tls_failure(
    api: FakeKubeApi, dev: KubeconfigContext, tmp_path: Path
) -> None:
    other_ca = FakeKubeApi().ca.cert_pem
    config = write_kubeconfig(tmp_path / "config", [dataclasses.replace(dev, ca_pem=other_ca)])
    with pytest.raises(
        NodeSourceError, match=r"cannot reach the Kubernetes API server .*: TLS failed: .*certif"
    ):
        kube_nodes(KubeSelection(kubeconfig=config, all_nodes=True))
    assert api.requests == []


# -- $KUBECONFIG -----------------------------------------------------------------------------


def test_kubeconfig_env_is_honored(
    api: FakeKubeApi, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert names(kube_nodes(KubeSelection(names=("gpu-1",)))) == ["gpu-1"]
    assert api.requests[-1].user == "alice"


def test_kubeconfig_env_list_merges_like_kubectl(
    api: FakeKubeApi,
    dev: KubeconfigContext,
    admin: KubeconfigContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = write_kubeconfig(tmp_path / "first", [dev], current="dev")
    second = write_kubeconfig(tmp_path / "second", [admin], current="admin")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}::{first}:{second}")
    # The first file that sets current-context decides it, as kubectl does.
    assert context_name(KubeSelection()) == "dev"
    kube_nodes(KubeSelection(names=("gpu-1",)))
    assert api.requests[-1].user == "alice"
    # A context defined only in the second file is usable too.
    kube_nodes(KubeSelection(context="admin", names=("gpu-1",)))
    assert api.requests[-1].user == "kube-admin"


def test_kubeconfig_env_naming_only_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(NodeSourceError, match=r"none of the files \$KUBECONFIG names exists"):
        kube_nodes(KubeSelection(all_nodes=True))


def test_explicit_kubeconfig_beats_the_env(
    api: FakeKubeApi, kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert names(kube_nodes(KubeSelection(kubeconfig=kubeconfig, names=("gpu-1",)))) == ["gpu-1"]


# -- the stand-in itself, read through the official client's models --------------------------


def test_fake_answers_deserialize_into_the_official_models(kubeconfig: Path) -> None:
    from kubernetes import client, config

    with config.new_client_from_config(config_file=str(kubeconfig), persist_config=False) as api_client:
        core = client.CoreV1Api(api_client)
        listed = core.list_node(label_selector="tier=web")
        assert [n.metadata.name for n in listed.items] == ["worker-1", "worker-2"]
        worker2 = core.read_node("worker-2")
        assert worker2.status.node_info.architecture == "arm64"
        assert [a.type for a in core.read_node("worker-1").status.addresses] == [
            "InternalIP",
            "ExternalIP",
            "Hostname",
        ]
        assert core.read_node("cp-1").spec.taints[0].effect == "NoSchedule"
        with pytest.raises(client.ApiException) as err:
            core.read_node("nope")
        assert err.value.status == 404
        assert client.VersionApi(api_client).get_code().git_version == "v1.30.2-fake"


# -- the cluster's peer-to-peer mirror (Spegel) ------------------------------------------------


@pytest.fixture()
def spegel(tmp_path: Path) -> Iterator[tuple[SpegelPods, Path, FakeKubeApi]]:
    """The cluster with Spegel's pods on worker-1 (ready) and worker-2 (not ready)."""
    server = FakeKubeApi(CLUSTER)
    pods = SpegelPods(server)
    pods.add(SpegelPod("spegel-a1b2c", "worker-1"))
    pods.add(SpegelPod("spegel-d3e4f", "worker-2", ready=False, registries=()))
    with server:
        path = write_kubeconfig(tmp_path / "kube" / "config", [server.token_context("dev", user="alice")])
        yield pods, path, server


def test_spegel_pods_tell_each_node_its_mirror(spegel: tuple[SpegelPods, Path, FakeKubeApi]) -> None:
    _, path, server = spegel
    specs = by_name(kube_nodes(KubeSelection(kubeconfig=path, all_nodes=True, find_mirrors=True)))
    worker_1, worker_2 = specs["worker-1"].mirror, specs["worker-2"].mirror
    assert worker_1 == ClusterMirror("spegel/spegel-a1b2c", True, frozenset({"docker.io", "ghcr.io"}))
    assert worker_2 == ClusterMirror("spegel/spegel-d3e4f", False, None)  # no list: every registry
    assert specs["gpu-1"].mirror is None  # no Spegel pod there
    (listing,) = [r for r in server.requests if r.path == "/api/v1/pods"]
    assert listing.query["labelSelector"] == "app.kubernetes.io/name=spegel"  # evaluated by the server


def test_spegel_is_looked_for_only_when_it_can_matter(spegel: tuple[SpegelPods, Path, FakeKubeApi]) -> None:
    _, path, server = spegel
    unasked = kube_nodes(KubeSelection(kubeconfig=path, all_nodes=True))
    one = kube_nodes(KubeSelection(kubeconfig=path, names=("worker-1",), find_mirrors=True))
    assert all(spec.mirror is None for spec in [*unasked, *one])
    assert not [r for r in server.requests if r.path == "/api/v1/pods"]


def test_no_permission_to_list_pods_is_a_warning_not_an_error(
    spegel: tuple[SpegelPods, Path, FakeKubeApi],
) -> None:
    pods, path, _ = spegel
    pods.list_forbidden.add("alice")
    told: list[str] = []
    specs = kube_nodes(KubeSelection(kubeconfig=path, all_nodes=True, find_mirrors=True), told.append)
    assert len(specs) == len(ALL) and all(spec.mirror is None for spec in specs)
    (warning,) = told
    assert "cannot look for Spegel through the Kubernetes API" in warning
    assert "may not list pods: it needs the `list` verb on `pods` at cluster scope" in warning
    assert "read from its own mirror configuration instead" in warning
