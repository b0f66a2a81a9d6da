"""The README's examples marked runnable, run as written against sandbox nodes.

A fenced block preceded by ``<!-- runnable -->`` is run: Python blocks of a section as one
script, in order, shell blocks with ``bash -e`` from the section's working directory. One
preceded by ``<!-- runnable: NAME -->`` is written there as the file NAME first (a Dockerfile,
a test file), for the section's shell block to use. Every section with runnable blocks has a
test here, and each test says what it prepared that the README takes as given:

- "Library": sandbox nodes ``node-1`` and ``node-2`` reached through ``deploy/ssh_config``, an OCI
  layout in ``build/app``, an inventory in ``deploy/hosts.ini``, and a registry with a
  self-signed certificate (the fake registry of tests/fakes: what is tested is the client's
  opt-out, not the registry) in place of ``registry.internal:5000``, the one change to the text;
  what the examples claim is checked on the nodes with ctr;
- "Nodes of your own": an image ``myapp:dev`` in the local Docker engine;
- "Verify your pipeline": nothing (an empty directory and this machine's static busybox).

The shell blocks run with the ``nodeload`` and ``pytest`` of this Python on PATH and a cache
directory of their own (where kept sandboxes keep their files).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from nodeload.sandbox import LayerSpec, Sandbox, build_image
from nodeload.sandbox.node import KEPT_LABEL
from tests.e2e.pushing import image_names
from tests.fakes.registry import FakeRegistry
from tests.helpers.oci import write_layout

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDER = "registry.internal:5000"
LIBRARY, SANDBOX_UP, PIPELINE = "Library", "Nodes of your own: `nodeload sandbox up`", "Verify your pipeline"
_HEADING = re.compile(r"^#{2,3} (.+)$", re.MULTILINE)
_RUNNABLE = re.compile(
    r"^<!-- runnable(?:: (?P<file>[\w.-]+))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    """A block of the README marked runnable."""

    section: str  # the heading it is under
    lang: str
    file: str | None  # written as this file, not run
    body: str


def runnable_examples() -> list[Example]:
    """Every block marked runnable, in the README's order."""
    text = README.read_text()
    headings = [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]
    found = []
    for match in _RUNNABLE.finditer(text):
        section = [title for start, title in headings if start < match.start()][-1]
        found.append(Example(section, match.group("lang"), match.group("file"), match.group("body")))
    return found


def _of(section: str) -> list[Example]:
    return [e for e in runnable_examples() if e.section == section]


def _run_section(section: str, directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Write the section's files into ``directory``, then run its shell blocks there."""
    output = subprocess.CompletedProcess[str]([], 0, "", "")
    for example in _of(section):
        if example.file is not None:
            (directory / example.file).write_text(example.body)
            continue
        assert example.lang == "sh", example
        output = subprocess.run(
            ["bash", "-e", "-c", example.body],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert output.returncode == 0, (
            f"{section}:\n{example.body}\n{output.stdout[-3000:]}\n{output.stderr[-3000:]}"
        )
    return output


def _shell_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def test_every_runnable_example_has_its_test() -> None:
    examples = runnable_examples()
    assert {e.section for e in examples} == {LIBRARY, SANDBOX_UP, PIPELINE}
    assert {e.lang for e in examples} == {"python", "sh", "dockerfile"}


def test_the_readme_has_library_examples() -> None:
    examples = [e.body for e in _of(LIBRARY)]
    assert len(examples) >= 4
    assert all(e.lang == "python" and e.file is None for e in _of(LIBRARY))
    assert any("nodeload.push(source" in e for e in examples)  # push takes an opened source
    assert any("tls_verify=False" in e for e in examples)


def test_the_library_examples_run_as_written(
    sandbox: Sandbox, app_layout: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _ = app_layout
    (tmp_path / "build").mkdir()
    shutil.copytree(layout, tmp_path / "build" / "app")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(sandbox.ssh_config_path, deploy / "ssh_config")
    (deploy / "hosts.ini").write_text("[web]\nnode-1\nnode-2\n\n[db]\ndb-1 ansible_host=192.0.2.7\n")
    monkeypatch.chdir(tmp_path)

    with FakeRegistry(tls=True) as registry:
        registry.push_layout("team/app", write_layout(tmp_path / "registry-layout", seed=61), "v1")
        script = "\n".join(e.body for e in _of(LIBRARY)).replace(PLACEHOLDER, registry.host)
        namespace: dict[str, object] = {"__name__": "readme_library"}
        exec(compile(script, str(README), "exec"), namespace)

    for node in sandbox.nodes:
        names = image_names(node)
        assert "example.com/team/app:v1" in names
        assert "docker.io/team/served:v1" in names  # through nodeload.serve
    assert f"{registry.host}/team/app:v1" in image_names(sandbox.nodes[0])


def test_the_sandbox_up_example_runs_as_written(
    tmp_path: Path, docker_client: docker.DockerClient, node_image: str
) -> None:
    build_image(docker_client, "myapp:dev", "hello from myapp", [LayerSpec(1024 * 1024, "readme-myapp")])
    try:
        run = _run_section(SANDBOX_UP, tmp_path, _shell_env(tmp_path))
    finally:  # a block that failed halfway would leave its nodes up
        subprocess.run(
            [sys.executable, "-m", "nodeload", "sandbox", "down"],
            env=_shell_env(tmp_path),
            capture_output=True,
        )
    assert "docker.io/library/myapp:dev" in run.stdout.split()  # ctr images ls -q on node-1
    assert docker_client.containers.list(all=True, filters={"label": f"{KEPT_LABEL}=nodeload"}) == []
    assert not (tmp_path / "cache" / "nodeload" / "sandboxes" / "nodeload").exists()


def test_the_pipeline_example_runs_as_written(tmp_path: Path, node_image: str) -> None:
    run = _run_section(PIPELINE, tmp_path, _shell_env(tmp_path))
    assert "1 passed" in run.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"Dockerfile", "test_pipeline.py", "busybox"}
