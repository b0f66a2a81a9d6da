"""charts/nodeload-agent is the single source of the agent's manifests: the labels, namespace,
container name and socket paths there must be the ones the agent transport looks for."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from nodeload.nodes.kubernetes import K3S_SOCKET
from nodeload.nodes.spec import DEFAULT_AGENT_NAMESPACE
from nodeload.targets.containerd import DEFAULT_SOCKETS
from nodeload.transports.agent import AGENT_CONTAINER, AGENT_LABEL_KEY, AGENT_LABEL_VALUE

CHART = Path(__file__).resolve().parents[2] / "charts" / "nodeload-agent"


def _values() -> dict[str, object]:
    values: dict[str, object] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def test_the_chart_is_a_helm_v2_chart() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "nodeload-agent" and chart["version"]


def test_the_pods_carry_the_label_the_transport_selects_by() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    selector = helpers.split('define "nodeload-agent.selectorLabels"')[1].split("{{- end }}")[0]
    assert f"{AGENT_LABEL_KEY}: {AGENT_LABEL_VALUE}" in selector
    daemonset = (CHART / "templates" / "daemonset.yaml").read_text()
    assert 'include "nodeload-agent.selectorLabels"' in daemonset.split("template:")[0]  # the selector
    assert 'include "nodeload-agent.labels"' in daemonset.split("template:")[1]  # the pods


def test_the_namespace_and_container_are_the_transport_defaults() -> None:
    assert _values()["namespace"] == DEFAULT_AGENT_NAMESPACE
    daemonset = (CHART / "templates" / "daemonset.yaml").read_text()
    assert re.findall(r"- name: (\S+)\n\s+image:", daemonset) == [AGENT_CONTAINER]


def test_every_socket_nodeload_tries_is_mounted_at_its_own_path() -> None:
    directories = _values()["socketDirectories"]
    assert isinstance(directories, list)
    for socket in {*DEFAULT_SOCKETS[:1], K3S_SOCKET}:
        assert str(Path(socket).parent) in directories, socket
    daemonset = (CHART / "templates" / "daemonset.yaml").read_text()
    assert "mountPath: {{ $dir }}" in daemonset and "path: {{ $dir }}" in daemonset  # same path inside


def test_the_agent_has_no_api_permissions_and_tolerates_every_taint() -> None:
    account = (CHART / "templates" / "serviceaccount.yaml").read_text()
    assert "automountServiceAccountToken: false" in account
    assert not list((CHART / "templates").glob("*clusterrole*"))
    assert {"operator": "Exists"} in _values()["tolerations"]  # type: ignore[operator]
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    assert "kind: Role\n" in rbac and "pods/exec" in rbac and "ClusterRole" not in rbac
