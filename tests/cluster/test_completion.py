"""Completing ``--node`` from a real cluster: the names its API server lists, the kubeconfig named
on the line or in the config file (the shell is real bash, see tests/e2e/test_completion.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nodeload.sandbox.k8s import Cluster
from tests.helpers.shells import bash

pytestmark = pytest.mark.e2e


def test_node_names_come_from_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODELOAD_", "KUBECONFIG"))}
    env |= {"HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["NODELOAD_TEST_DIR"] = str(tmp_path)
    # Loading the Kubernetes client can take seconds on a busy machine: past Tab's usual patience
    # (tests/e2e/test_completion.py checks that bound).
    env["NODELOAD_COMPLETION_TIMEOUT"] = "120"
    line = f"nodeload push app:dev --kubeconfig {cluster.kubeconfig} --node "
    assert bash(line, env) == set(cluster.node_names)
    config = tmp_path / "config.toml"
    config.write_text(f'[defaults]\nkubeconfig = "{cluster.kubeconfig}"\n')
    assert bash("nodeload nodes --node ", env | {"NODELOAD_CONFIG": str(config)}) == set(cluster.node_names)
