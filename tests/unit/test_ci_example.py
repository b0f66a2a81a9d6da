"""examples/ci-pipeline installs nodeload as the README says (from a checkout: nodeload is not
on a package index) and says why for each thing it passes. Running it is
tests/e2e/test_pytest_plugin.py::test_the_example_pipeline_passes."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ci-pipeline"
WORKFLOW = EXAMPLE / ".github" / "workflows" / "pipeline.yml"


def _steps() -> list[dict[str, Any]]:
    document = yaml.safe_load(WORKFLOW.read_text())
    (job,) = document["jobs"].values()
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def test_the_workflow_installs_nodeload_from_a_checkout_of_it() -> None:
    steps = _steps()
    checkouts = [
        s.get("with", {}).get("path") for s in steps if str(s.get("uses", "")).startswith("actions/checkout")
    ]
    installs = [s["run"] for s in steps if "pip install" in s.get("run", "")]
    assert installs == ["pip install './nodeload[sandbox]' pytest"]
    assert "nodeload" in checkouts  # the path the install reads
    readme = (REPO / "README.md").read_text()
    assert "pip install .            # from a checkout" in readme  # the README's way
    assert "pip install './nodeload[sandbox]' pytest" in (EXAMPLE / "README.md").read_text()
    # Never from an index, where nodeload is not published.
    for text in (WORKFLOW.read_text(), (EXAMPLE / "README.md").read_text()):
        assert not re.search(r"pip install '?nodeload\[", text)


def test_the_workflow_says_why_for_each_step_that_is_not_obvious() -> None:
    lines = WORKFLOW.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- run:") or "repository:" in line:
            above = [text.strip() for text in lines[max(0, i - 4) : i]]
            assert any(text.startswith("#") for text in above), f"no comment says why: {line.strip()}"


def test_only_the_projects_own_tests_are_collected() -> None:
    ini = configparser.ConfigParser()
    ini.read(EXAMPLE / "pytest.ini")
    assert ini["pytest"]["testpaths"].split() == ["tests"]  # not the nodeload checkout beside them
    assert ini["pytest"]["nodeload_nodes"] == "2"
