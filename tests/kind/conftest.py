"""A real kind cluster for the kind suite: created from ``kind-config.yaml``, deleted at the end.

Where ``kind`` is missing or cannot start its node image (this project's VM has no registry
access), the suite is skipped with that reason, never silently; ``NODELOAD_REQUIRE_KIND=1``
(the GitHub Actions job) turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "nodeload"
CONTEXT = f"kind-{CLUSTER}"


def unavailable(reason: str) -> None:
    """Skip the suite for ``reason`` (fail where the kind suite is required)."""
    if os.environ.get("NODELOAD_REQUIRE_KIND"):
        pytest.fail(f"the kind suite is required here but cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The kubeconfig of a fresh kind cluster (context ``kind-nodeload``)."""
    if shutil.which("kind") is None:
        unavailable("the kind binary is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/)")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True, check=False)
    created = subprocess.run(
        [
            "kind", "create", "cluster", "--name", CLUSTER, "--config", str(REPO / "kind-config.yaml"),
            "--kubeconfig", str(kubeconfig), "--wait", "180s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if created.returncode != 0:
        why = created.stderr[-800:]
        unavailable(f"kind could not create a cluster (no registry access for its node image?): {why}")
    try:
        yield kubeconfig
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True, check=False)
