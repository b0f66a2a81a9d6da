"""The pipeline's proof: the image we build reaches every node, runs there, and costs only its bytes.

Needs nodeload with its sandbox extra (`pip install './nodeload[sandbox]'` from a checkout of
nodeload, as its README installs it) and a Docker engine; the fixtures come from nodeload's
pytest plugin.
"""

import shutil
from pathlib import Path

import docker

from nodeload.sandbox import static_busybox
from nodeload.sandbox.assertions import assert_on_node

PROJECT = Path(__file__).resolve().parents[1]
IMAGE = "example/pipeline-app:ci"


def build(context: Path) -> None:
    """docker build of the project's Dockerfile (what the CI job does before testing)."""
    shutil.copy(PROJECT / "Dockerfile", context / "Dockerfile")
    shutil.copy(static_busybox(), context / "busybox")
    client = docker.from_env()
    client.images.build(path=str(context), tag=IMAGE, rm=True)
    client.close()


def test_the_image_lands_on_every_node_and_runs(nodeload_sandbox, nodeload_push, tmp_path):
    build(tmp_path)

    # No options: every sandbox node, nodeload's defaults (the engine's own docker push, k8s.io,
    # unpacked for CRI), as a deploy would push. nodeload_push(IMAGE, "node-1", export="save")
    # would pick nodes and pass PushOptions fields.
    pushed = nodeload_push(IMAGE)

    pushed.assert_ok()
    pushed.assert_bytes()  # what nodeload reported == what each node's NIC and content store saw
    pushed.assert_only_changed_layers()
    for node in nodeload_sandbox.nodes:
        assert_on_node(node, f"docker.io/{IMAGE}", prints="hello from the pipeline")
