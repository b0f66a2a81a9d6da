"""The whole job on a real cluster: build an image, ``nodeload push --all-nodes`` into every kind
node, then let kubelet run it on each node with ``imagePullPolicy: Never`` (no registry anywhere)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeload.sandbox import build_image, docker_client
from tests.kind.conftest import CONTEXT, unavailable

pytestmark = [pytest.mark.ci_may_skip, pytest.mark.e2e]

IMAGE = "nodeload-kind/app:v1"
AGENT_IMAGE = "nodeload-kind/agent-app:v1"
SEEDED_IMAGE = "nodeload-kind/seeded-app:v1"


def _push(kind_cluster: Path, image: str, *args: str) -> list[dict[str, object]]:
    argv = [sys.executable, "-m", "nodeload", "push", image, "--kubeconfig", str(kind_cluster)]
    argv += ["--context", CONTEXT, "--all-nodes", "--json", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "cannot look for Spegel" not in proc.stderr  # the API lists its pods for this user
    results: list[dict[str, object]] = json.loads(proc.stdout)["nodes"]
    assert len(results) == 3 and all(r["status"] == "ok" and r["cri_indexed"] for r in results), results
    return results


def test_push_all_nodes_then_kubelet_runs_it_everywhere(kind_cluster: Path) -> None:
    build_image(docker_client(), IMAGE, "hello from kind")
    results = _push(kind_cluster, IMAGE)
    _run_everywhere(kind_cluster, [str(r["node"]) for r in results], IMAGE, "hello from kind")


def test_the_agent_chart_carries_a_push_without_ssh_or_docker_exec(kind_cluster: Path) -> None:
    """charts/nodeload-agent installed with helm, then --reach agent: the API server is the only door."""
    if shutil.which("helm") is None:
        unavailable("helm is not installed (https://helm.sh/docs/intro/install/)")
    chart = Path(__file__).resolve().parents[2] / "charts" / "nodeload-agent"
    helm = ["helm", "--kubeconfig", str(kind_cluster), "--kube-context", CONTEXT]
    # kind's control-plane node is one of the three pushed to: the chart leaves it out unless asked.
    install = [*helm, "install", "nodeload-agent", str(chart), "--set", "controlPlane=true"]
    subprocess.run([*install, "--wait", "--timeout", "180s"], check=True)
    try:
        build_image(docker_client(), AGENT_IMAGE, "hello through the agent")
        results = _push(kind_cluster, AGENT_IMAGE, "--reach", "agent")
        assert {r["reach"] for r in results} == {"agent-exec:socat"}
        _run_everywhere(
            kind_cluster, [str(r["node"]) for r in results], AGENT_IMAGE, "hello through the agent"
        )
    finally:
        subprocess.run([*helm, "uninstall", "nodeload-agent", "--wait"], check=False)


def test_seeds_and_real_spegel_cost_one_upload(kind_cluster: Path) -> None:
    """Spegel installed with its chart: one seed gets the push, the other nodes pull from it."""
    if shutil.which("helm") is None:
        unavailable("helm is not installed (https://helm.sh/docs/intro/install/)")
    helm = ["helm", "--kubeconfig", str(kind_cluster), "--kube-context", CONTEXT]
    install = [*helm, "upgrade", "--install", "spegel", "oci://ghcr.io/spegel-org/helm-charts/spegel"]
    install += ["--namespace", "spegel", "--create-namespace", "--wait", "--timeout", "300s"]
    if subprocess.run(install, capture_output=True, text=True, check=False).returncode != 0:
        unavailable("Spegel's chart could not be installed (no registry access?)")
    try:
        build_image(docker_client(), SEEDED_IMAGE, "hello from a peer")
        results = _push(kind_cluster, SEEDED_IMAGE, "--seeds", "1")
        vias = sorted(str(r["delivered_by"]) for r in results)
        assert vias == ["peer-pull", "peer-pull", "push"], results
        assert not any(r["warnings"] for r in results), results  # Spegel's pods, read through the API
        _run_everywhere(kind_cluster, [str(r["node"]) for r in results], SEEDED_IMAGE, "hello from a peer")
    finally:
        subprocess.run([*helm, "uninstall", "spegel", "--namespace", "spegel", "--wait"], check=False)


def _run_everywhere(kind_cluster: Path, nodes: list[str], image: str, says: str) -> None:
    """A Pod with imagePullPolicy: Never on each node; each must print ``says``."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kind_cluster), context=CONTEXT))
    names = []
    for node in nodes:
        name = f"nodeload-{secrets.token_hex(3)}"
        names.append(name)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": "nodeload-kind"}),
            spec=client.V1PodSpec(
                node_name=node,
                restart_policy="Never",
                tolerations=[client.V1Toleration(operator="Exists")],
                containers=[
                    client.V1Container(name="app", image=f"docker.io/{image}", image_pull_policy="Never")
                ],
            ),
        )
        api.create_namespaced_pod("default", pod)
    try:
        deadline = time.monotonic() + 180
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                phase = api.read_namespaced_pod(name, "default").status.phase
                assert phase != "Failed", api.read_namespaced_pod_log(name, "default")
                if phase == "Succeeded":
                    assert api.read_namespaced_pod_log(name, "default").strip() == says
                    pending.discard(name)
            time.sleep(1)
        assert not pending, f"pods never ran: {sorted(pending)}"
    finally:
        for name in names:
            api.delete_namespaced_pod(name, "default")
