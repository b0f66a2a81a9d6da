"""The README's "Library" examples, run as written, in order, as one script, against sandbox
nodes: what they print is what a user sees, and what they claim is checked on the nodes with
ctr.

The only change made to the text: ``registry.internal:5000`` becomes the address of a registry
with a self-signed certificate (the fake registry of tests/fakes: what is tested is the
client's opt-out, not the registry).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import image_names
from tests.fakes.registry import FakeRegistry
from tests.helpers.oci import write_layout

README = Path(__file__).resolve().parents[2] / "README.md"
PLACEHOLDER = "registry.internal:5000"


def _examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Library\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_has_library_examples() -> None:
    examples = _examples()
    assert len(examples) >= 4
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
        script = "\n".join(_examples()).replace(PLACEHOLDER, registry.host)
        namespace: dict[str, object] = {"__name__": "readme_library"}
        exec(compile(script, str(README), "exec"), namespace)

    for node in sandbox.nodes:
        names = image_names(node)
        assert "example.com/team/app:v1" in names
        assert "docker.io/team/served:v1" in names  # through nodeload.serve
    assert f"{registry.host}/team/app:v1" in image_names(sandbox.nodes[0])
