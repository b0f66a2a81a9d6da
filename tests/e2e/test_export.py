"""A Docker-engine image leaving the engine by ``docker push`` into nodeload's endpoint (no export),
and the fall-back to ``docker save`` when a push would resend layers a node already holds."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import docker
import pytest

from nodeload.sandbox import LayerSpec, Sandbox, build_image
from tests.e2e.pushing import content_sizes, nodeload, run_image

pytestmark = pytest.mark.e2e

WIRE_FIXED = 256 * 1024


def _push(sandbox: Sandbox, image: str, cache: Path, *args: str) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    proc = nodeload(
        "push", image, "--node", "node-1", "-F", str(sandbox.ssh_config_path), "--json", *args, env=env
    )
    (result,) = json.loads(proc.stdout)["nodes"]
    return dict(result), proc.stderr


def test_docker_push_path_sends_only_the_changed_layer(
    node_sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    node = node_sandbox.node("node-1")
    cold, _ = _push(node_sandbox, app_images["v1"], tmp_path, "--export", "push")
    assert (cold["status"], cold["export"], cold["reach"]) == ("ok", "docker-push", "ssh-forward"), cold
    assert cold["bytes_sent"] == sum(content_sizes(node).values())

    before, rx = content_sizes(node), node.rx_bytes()
    warm, _ = _push(node_sandbox, app_images["v2"], tmp_path)  # auto: the engine pushed these layers before
    arrived = {d: s for d, s in content_sizes(node).items() if d not in before}
    assert warm["export"] == "docker-push"
    assert warm["bytes_sent"] == sum(arrived.values()) and warm["blobs_sent"] == len(arrived) == 3
    assert node.rx_bytes() - rx <= warm["bytes_sent"] * 1.05 + WIRE_FIXED
    assert run_image(node, "docker.io/nodeload-e2e/app:v2", f"t-{secrets.token_hex(4)}") == "hello from v2"

    rx = node.rx_bytes()
    repeat, _ = _push(node_sandbox, app_images["v2"], tmp_path)
    assert (repeat["bytes_sent"], repeat["blobs_sent"]) == (0, 0)
    assert node.rx_bytes() - rx < WIRE_FIXED
    # The node holds the engine's image as it is: nothing for the engine to push.
    assert (repeat["export"], repeat["status"], repeat["cri_indexed"]) == ("none", "ok", True)
    assert repeat["blobs_skipped"] == repeat["blobs_total"] == warm["blobs_total"]
    assert repeat["digest"] == warm["digest"]

    node.check_output(["ctr", "-n", "k8s.io", "images", "rm", "docker.io/nodeload-e2e/app:v2"])
    again, _ = _push(node_sandbox, app_images["v2"], tmp_path)  # the record is gone: pushed, found
    assert (again["export"], again["status"], again["bytes_sent"]) == ("docker-push", "ok", 0)
    assert run_image(node, "docker.io/nodeload-e2e/app:v2", f"t-{secrets.token_hex(4)}") == "hello from v2"

    node.check_output(["ctr", "-n", "k8s.io", "content", "rm", again["digest"]])  # the record is dangling
    repaired, _ = _push(node_sandbox, app_images["v2"], tmp_path)
    assert (repaired["export"], repaired["status"]) == ("docker-push", "ok")
    assert again["digest"] in content_sizes(node)


def test_auto_keeps_to_docker_save_when_a_node_holds_the_layers_another_way(
    node_sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    node = node_sandbox.node("node-1")
    node.ctr_import(app_images["v1"])  # uncompressed layers under their diffIDs
    as_imported, _ = _push(node_sandbox, app_images["v1"], tmp_path)
    assert (as_imported["export"], as_imported["blobs_sent"]) == ("none", 0)  # the very image: done

    result, err = _push(node_sandbox, app_images["v1"], tmp_path, "--name", "example.com/app:other")
    assert "exporting with docker save rather than docker push" in err
    assert result["export"] == "docker-save"
    assert result["blobs_sent"] == 1  # only a manifest: every layer was there already


def test_a_name_found_in_the_engine_never_repoints_an_image(
    node_sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Pushed by its image ID, an engine image's name comes from its RepoTags, not from the user:
    on the engine's own path (the default) too, it may not move a record the node has for another
    image."""
    node = node_sandbox.node("node-1")
    victim = "docker.io/library/secrev-victim:1"
    named, _ = _push(node_sandbox, app_images["v1"], tmp_path, "--name", victim)
    before = node.check_output(["ctr", "-n", "k8s.io", "images", "ls", f"name=={victim}"])
    build_image(docker_client, "secrev-victim:1", "not the victim", [LayerSpec(1024 * 1024, "secrev")])
    try:
        image_id = docker_client.images.get("secrev-victim:1").id
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
        args = ["push", image_id, "--node", "node-1", "-F", str(node_sandbox.ssh_config_path), "--json"]
        proc = nodeload(*args, check=False, env=env)
    finally:
        docker_client.images.remove("secrev-victim:1", noprune=False)
    assert proc.returncode == 1, proc.stderr
    (result,) = json.loads(proc.stdout)["nodes"]
    assert result["export"] == "docker-push", result  # the engine's own path (the default), no fallback
    assert "rather than docker push" not in proc.stderr
    assert f"{victim} already exists on the node" in result["error"], result
    assert node.check_output(["ctr", "-n", "k8s.io", "images", "ls", f"name=={victim}"]) == before
    assert named["digest"] in before
