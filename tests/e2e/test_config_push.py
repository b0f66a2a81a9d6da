"""A push from the Docker engine to sandbox nodes (real sshd and containerd in containers) whose
whole selection comes from a config file: ``nodeload push IMAGE`` and nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import image_names, nodeload, run_image

pytestmark = pytest.mark.e2e


def test_push_with_nothing_but_the_image_on_the_line(
    sandbox: Sandbox, app_images: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    aliases = ", ".join(f'"{alias}"' for alias in sandbox.aliases)
    config.write_text(
        f'[defaults]\nssh-config = "{sandbox.ssh_config_path}"\nnode = [{aliases}]\n\n'
        '[push]\nnamespace = "configured"\nexport = "save"\n'
    )
    env = {**os.environ, "NODELOAD_CONFIG": str(config)}
    report = json.loads(nodeload("push", app_images["v1"], "--json", env=env).stdout)

    assert sorted(n["node"] for n in report["nodes"]) == sorted(sandbox.aliases)
    assert {(n["status"], n["namespace"], n["export"]) for n in report["nodes"]} == {
        ("ok", "configured", "docker-save")
    }
    name = f"docker.io/{app_images['v1']}"
    for alias in sandbox.aliases:
        node = sandbox.node(alias)
        assert name in image_names(node, "configured")
        assert run_image(node, name, f"config-{alias}", namespace="configured") == "hello from v1"
