"""charts/nodeload-agent is the single source of the agent's manifests: rendered here without helm
(tests/helpers/helm.py), its labels, names, namespace, container and socket paths must be the
ones the agent transport looks for, and its pods must be as locked down as a relay allows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeload.containerd.connect import DEFAULT_SOCKETS
from nodeload.nodes.kubernetes import CONTROL_PLANE_LABELS, K3S_SOCKET
from nodeload.nodes.spec import DEFAULT_AGENT_NAMESPACE
from nodeload.transports.agent import AGENT_CONTAINER, AGENT_DAEMONSET, AGENT_LABEL_KEY, AGENT_LABEL_VALUE
from tests.helpers.helm import ChartError, manifests, render

CHART = Path(__file__).resolve().parents[2] / "charts" / "nodeload-agent"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _daemonset(values: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    (daemonset,) = [o for o in manifests(CHART, values, **kwargs) if o["kind"] == "DaemonSet"]
    return daemonset


def _pod(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = _daemonset(values)["spec"]["template"]["spec"]
    return pod


def _container(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    (container,) = _pod(values)["containers"]
    return dict(container)


# -- what the transport looks for -----------------------------------------------------------


def test_the_chart_is_a_helm_v2_chart() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "nodeload-agent" and chart["version"]


@pytest.mark.parametrize("release", ["nodeload-agent", "agents"])
def test_the_daemonset_is_named_as_the_transport_expects_whatever_the_release(release: str) -> None:
    """The transport takes only pods whose controller is this DaemonSet, by name."""
    daemonset = _daemonset(release=release)
    assert daemonset["apiVersion"] == "apps/v1" and daemonset["metadata"]["name"] == AGENT_DAEMONSET


def test_the_pods_carry_the_label_the_transport_selects_by() -> None:
    daemonset = _daemonset()
    selector = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert selector[AGENT_LABEL_KEY] == AGENT_LABEL_VALUE
    assert selector.items() <= labels.items()


def test_the_namespace_and_container_are_the_transport_defaults() -> None:
    assert _values()["namespace"] == DEFAULT_AGENT_NAMESPACE
    objects = manifests(CHART, {"pushers": [{"kind": "Group", "name": "deployers"}]})
    cluster_wide = ("Namespace", "ClusterRole", "ClusterRoleBinding")
    namespaced = [o for o in objects if o["kind"] not in cluster_wide]
    assert {o["metadata"]["namespace"] for o in namespaced} == {DEFAULT_AGENT_NAMESPACE}
    assert [c["name"] for c in _pod()["containers"]] == [AGENT_CONTAINER]


def test_every_socket_nodeload_tries_is_mounted_read_only_at_its_own_path() -> None:
    pod, container = _pod(), _container()
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for socket in {*DEFAULT_SOCKETS[:1], K3S_SOCKET}:
        directory = str(Path(socket).parent)
        assert host[mounts[directory]["name"]] == directory, socket  # the same path inside
    # Connecting to a socket writes nothing: read-only mounts carry the relay (the e2e
    # sandbox checks it with socat, root without capabilities, on a read-only bind mount).
    assert all(m.get("readOnly") is True for m in container["volumeMounts"])


def test_the_agent_has_no_api_permissions_and_pushers_only_what_a_push_needs() -> None:
    objects = manifests(CHART, {"pushers": [{"kind": "User", "name": "alice"}]})
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["automountServiceAccountToken"] is False
    assert _pod()["automountServiceAccountToken"] is False
    bound = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert all(s["kind"] == "User" and s["name"] == "alice" for b in bound for s in b["subjects"])
    (role,) = [o for o in objects if o["kind"] == "Role"]  # in the agent namespace
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"pods", "pods/exec"}
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]  # nodes are cluster-scoped
    assert [(rule["resources"], rule["verbs"]) for rule in cluster_role["rules"]] == [
        (["nodes"], ["get", "list"])
    ]
    without = {o["kind"] for o in manifests(CHART, {})}
    assert not without & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


# -- the pods' hardening ----------------------------------------------------------------------


def test_the_image_is_pinned_by_digest_when_one_is_given() -> None:
    repository, tag = _values()["image"]["repository"], _values()["image"]["tag"]
    assert _container({"image": {"digest": DIGEST}})["image"] == f"{repository}@{DIGEST}"
    assert _container()["image"] == f"{repository}:{tag}"  # no digest: the tag, as a fallback


@pytest.mark.parametrize("digest", ["0123abcd", "sha256:abc", "sha512:" + "0" * 64, "SHA256:" + "A" * 64])
def test_a_malformed_digest_is_refused(digest: str) -> None:
    with pytest.raises(ChartError, match=r"image\.digest must be sha256:"):
        render(CHART, {"image": {"digest": digest}})


def test_the_notes_say_when_the_image_is_not_pinned() -> None:
    assert "the image is not pinned" in render(CHART)["NOTES.txt"]
    assert "not pinned" not in render(CHART, {"image": {"digest": DIGEST}})["NOTES.txt"]


def test_the_pod_is_as_locked_down_as_a_relay_to_root_s_socket_allows() -> None:
    pod, container = _pod(), _container()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["enableServiceLinks"] is False
    context = container["securityContext"]
    # Root: containerd's socket is root's, and its owner needs no capability to connect.
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]


# -- where the pods run -----------------------------------------------------------------------


CP, MASTER = CONTROL_PLANE_LABELS


def _node(
    name: str, labels: Mapping[str, str] = {}, taints: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    return {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}, "taints": list(taints)}


NO_SCHEDULE = {"key": CP, "effect": "NoSchedule"}
NODES = [
    _node("worker"),
    _node("gpu", {"pool": "gpu"}, [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]),
    _node("kubeadm-cp", {CP: ""}, [NO_SCHEDULE]),
    _node("old-master", {MASTER: ""}),
    _node("k3s-server", {CP: "true", MASTER: "true"}),  # k3s taints no server by default
    _node("gpu-cp", {"pool": "gpu", CP: ""}),
]


def _expression_holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    return {
        "In": key in labels and labels[key] in values,
        "NotIn": key not in labels or labels[key] not in values,
        "Exists": key in labels,
        "DoesNotExist": key not in labels,
    }[operator]


def _tolerated(taint: Mapping[str, str], tolerations: Sequence[Mapping[str, str]]) -> bool:
    def tolerates(t: Mapping[str, str]) -> bool:
        if t.get("effect") and t["effect"] != taint["effect"]:
            return False
        if t.get("operator") == "Exists":
            return not t.get("key") or t["key"] == taint["key"]
        return t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", "")

    return any(tolerates(t) for t in tolerations)


def _runs_on(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """The DaemonSet controller's test: node selector, required node affinity, taints."""
    labels = node["labels"]
    if not all(labels.get(k) == v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    affinity = (pod.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        terms = required["nodeSelectorTerms"]
        fields = {"metadata.name": node["name"]}
        if not any(
            all(_expression_holds(e, labels) for e in term.get("matchExpressions", ()))
            and all(_expression_holds(e, fields) for e in term.get("matchFields", ()))
            for term in terms
        ):
            return False
    blocking = [t for t in node["taints"] if t["effect"] in ("NoSchedule", "NoExecute")]
    return all(_tolerated(t, pod.get("tolerations") or ()) for t in blocking)


def _scheduled(values: Mapping[str, Any] | None = None) -> list[str]:
    pod = _pod(values)
    return [node["name"] for node in NODES if _runs_on(pod, node)]


def test_control_plane_nodes_get_no_agent_by_default_though_every_taint_is_tolerated() -> None:
    assert _values()["controlPlane"] is False
    assert {"operator": "Exists"} in _pod()["tolerations"]
    assert _scheduled() == ["worker", "gpu"]


def test_control_plane_nodes_get_an_agent_when_asked() -> None:
    assert _scheduled({"controlPlane": True}) == [node["name"] for node in NODES]


def test_the_exclusion_covers_the_labels_nodeload_knows_as_control_plane() -> None:
    terms = _pod()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms["nodeSelectorTerms"]
    excluded = {e["key"] for e in term["matchExpressions"] if e["operator"] == "DoesNotExist"}
    assert excluded == set(CONTROL_PLANE_LABELS)


def test_a_node_affinity_of_ones_own_is_kept_and_still_excludes_control_planes() -> None:
    gpu_or_worker = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["worker"]}]},
                ]
            }
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    assert _scheduled({"affinity": gpu_or_worker}) == ["worker", "gpu"]
    assert _scheduled({"affinity": gpu_or_worker, "controlPlane": True}) == ["worker", "gpu", "gpu-cp"]
    assert "podAntiAffinity" in _pod({"affinity": gpu_or_worker})["affinity"]
    assert _scheduled({"nodeSelector": {"pool": "gpu"}}) == ["gpu"]
