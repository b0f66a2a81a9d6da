"""The whole job on a real cluster: build an image, ``nodeload push --all-nodes`` into every kind
node, then let kubelet run it on each node with ``imagePullPolicy: Never`` (no registry anywhere)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeload.sandbox import build_image, docker_client
from tests.kind.conftest import CONTEXT

pytestmark = [pytest.mark.ci_may_skip, pytest.mark.e2e]

IMAGE = "nodeload-kind/app:v1"


def test_push_all_nodes_then_kubelet_runs_it_everywhere(kind_cluster: Path) -> None:
    from kubernetes import client, config

    build_image(docker_client(), IMAGE, "hello from kind")
    proc = subprocess.run(
        [
            sys.executable, "-m", "nodeload", "push", IMAGE, "--kubeconfig", str(kind_cluster),
            "--context", CONTEXT, "--all-nodes", "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["nodes"]
    assert len(results) == 3 and all(r["status"] == "ok" and r["cri_indexed"] for r in results), results

    api = client.CoreV1Api(config.new_client_from_config(str(kind_cluster), context=CONTEXT))
    names = []
    for result in results:
        name = f"nodeload-{secrets.token_hex(3)}"
        names.append(name)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": "nodeload-kind"}),
            spec=client.V1PodSpec(
                node_name=result["node"],
                restart_policy="Never",
                tolerations=[client.V1Toleration(operator="Exists")],
                containers=[
                    client.V1Container(name="app", image=f"docker.io/{IMAGE}", image_pull_policy="Never")
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
                    assert api.read_namespaced_pod_log(name, "default").strip() == "hello from kind"
                    pending.discard(name)
            time.sleep(1)
        assert not pending, f"pods never ran: {sorted(pending)}"
    finally:
        for name in names:
            api.delete_namespaced_pod(name, "default")
