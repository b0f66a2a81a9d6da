"""The config file as a user has it: the real CLI in a subprocess, its nodes, keys and namespace
from ``config.toml`` alone, pushing through a real sshd into a real containerd; each layer
(flag > environment > file > built-in) shown overriding the next, in what lands on the node and
in what ``nodeload nodes`` and ``push --dry-run`` report; and the errors of a bad file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli import Cli, images, layout
from tests.integration.nodes import Containerd

pytestmark = pytest.mark.integration


def _config(cli: Cli, node: Containerd, directory: Path, extra: str = "") -> Path:
    """A config.toml selecting the test sshd with the test's key and known_hosts, both kept
    next to it and named relatively (the CLI runs elsewhere), and the node's containerd."""
    keys = directory / "keys"
    keys.mkdir(parents=True)
    shutil.copy(cli.sshd.client_key, keys / "client")
    (keys / "client").chmod(0o600)
    shutil.copy(cli.sshd.known_hosts, keys / "known_hosts")
    path = directory / "config.toml"
    path.write_text(
        "[defaults]\n"
        f'node = ["{cli.sshd.node}"]\n'
        'identity = "keys/client"\n'
        'known-hosts = "keys/known_hosts"\n'
        f'containerd-socket = "{node.socket}"\n' + extra
    )
    return path


def _settings(cli: Cli, path: Path, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    run = cli.run(*argv, "--json", env={"NODELOAD_CONFIG": str(path), **(env or {})})
    assert run.code == 0, run.err
    settings: dict[str, Any] = json.loads(run.out)["settings"]
    return settings


def test_a_push_with_no_selection_flags_goes_where_the_file_says(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    node = fresh_containerd
    path = _config(cli, node, tmp_path / "conf", '[push]\nnamespace = "from-file"\n')
    info = layout(tmp_path, 2401, ref="v1", name="example.com/configured:v1")

    run = cli.run("push", f"oci:{info.path}:v1", "--json", env={"NODELOAD_CONFIG": str(path)})
    assert run.code == 0, run.err
    (result,) = run.nodes
    assert (result["status"], result["node"], result["namespace"]) == ("ok", cli.sshd.node, "from-file")
    assert "example.com/configured:v1" in images(node, "from-file")  # file > built-in k8s.io
    assert "example.com/configured:v1" not in images(node, "k8s.io")

    flagged = cli.run(
        "push",
        f"oci:{info.path}:v1",
        "--namespace",
        "from-flag",
        "--json",
        env={"NODELOAD_CONFIG": str(path)},
    )
    assert flagged.code == 0, flagged.err
    assert "example.com/configured:v1" in images(node, "from-flag")  # flag > file


def test_the_default_file_is_found_under_xdg_config_home(
    cli: Cli, fresh_containerd: Containerd, tmp_path: Path
) -> None:
    _config(cli, fresh_containerd, tmp_path / "xdg" / "nodeload")
    run = cli.run("nodes", "--check", "--json", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert run.code == 0, run.err
    document = json.loads(run.out)
    assert document["config_file"] == str(tmp_path / "xdg" / "nodeload" / "config.toml")
    (checked,) = document["nodes"]
    assert checked["check"]["reachable"] is True
    assert checked["check"]["socket"] == str(fresh_containerd.socket)


def test_each_layer_overrides_the_next_as_nodes_and_dry_run_show(
    cli: Cli, containerd: Containerd, tmp_path: Path
) -> None:
    # Without the suite's own NODELOAD_PERSIST (tests/conftest.py): this test sets it itself.
    cli = dataclasses.replace(cli, env={k: v for k, v in cli.env.items() if k != "NODELOAD_PERSIST"})
    path = _config(cli, containerd, tmp_path / "conf", '[push]\npersist = "10m"\nparallel = 3\n')
    where = str(path)

    shown = _settings(cli, path, "nodes")
    assert shown["node"] == {"value": [cli.sshd.node], "from": "config", "where": where}
    assert shown["identity"] == {
        "value": str(path.parent / "keys" / "client"),
        "from": "config",
        "where": where,
    }
    assert shown["inventory"] == {"value": None, "from": "default", "where": None}
    assert "persist" not in shown  # [push]'s own

    flagged = _settings(
        cli, path, "nodes", "--node", cli.sshd.node, "--known-hosts", str(cli.sshd.known_hosts)
    )
    assert flagged["node"] == {"value": [cli.sshd.node], "from": "flag", "where": None}
    assert flagged["known-hosts"]["from"] == "flag"
    assert flagged["identity"]["from"] == "config"

    dry = ("push", "app:dev", "--dry-run")
    assert _settings(cli, path, *dry)["persist"] == {"value": 600.0, "from": "config", "where": where}
    env = {"NODELOAD_PERSIST": "2m"}
    assert _settings(cli, path, *dry, env=env)["persist"] == {
        "value": 120.0,
        "from": "environment",
        "where": "NODELOAD_PERSIST",
    }
    assert _settings(cli, path, *dry, "--persist", "5m", env=env)["persist"]["value"] == 300.0
    assert _settings(cli, path, *dry, "--parallel", "7")["parallel"] == {
        "value": 7,
        "from": "flag",
        "where": None,
    }


def test_nodes_says_where_each_setting_came_from(cli: Cli, containerd: Containerd, tmp_path: Path) -> None:
    path = _config(cli, containerd, tmp_path / "conf")
    run = cli.run("nodes", "--ssh-user", "root", env={"NODELOAD_CONFIG": str(path)})
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"config file  {path}"
    assert f"  --node {cli.sshd.node}  (config file {path})" in lines
    assert "  --ssh-user root  (flag)" in lines
    assert f"  --identity {path.parent / 'keys' / 'client'}  (config file {path})" in lines


def test_a_bad_file_stops_every_command_with_its_line_and_the_accepted_keys(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[defaults]\nnode = ["n"]\n\n[push]\nparalel = 4\n')
    run = cli.run("push", "app:dev", env={"NODELOAD_CONFIG": str(path)})
    assert run.code == 2
    assert run.err.startswith(f"nodeload: error: {path}: line 5: [push] unknown setting 'paralel' ")
    assert "(did you mean 'parallel'?)" in run.err
    assert "[push] accepts: address-type, agent-namespace, all-nodes," in run.err


def test_a_flag_that_clashes_with_the_files_selection_says_so(cli: Cli, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("web-1 ansible_host=127.0.0.1\n")
    path = tmp_path / "config.toml"
    path.write_text('[defaults]\ninventory = "hosts.ini"\n')
    run = cli.run("nodes", "--kubeconfig", str(tmp_path / "kubeconfig"), env={"NODELOAD_CONFIG": str(path)})
    assert run.code == 2
    assert "--inventory cannot be combined with --kubeconfig" in run.err
    assert f"(the config file {path} sets --inventory)" in run.err
