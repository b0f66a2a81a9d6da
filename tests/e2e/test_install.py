"""nodeload as pip installs it, proven by pushing from it: with the declared minimum version of
every dependency, and from the wheel built out of the sdist.

Each test makes a venv of its own (pip fetches from PyPI: a minute or so) and runs nodeload
from outside the checkout, so that only what was installed is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import image_names

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# This test needs grpcio-tools, which needs a newer grpcio than nodeload's floor; it checks the
# committed generated code, not the runtime.
_GENERATOR_CHECK = "tests/unit/test_protos_current.py::test_committed_modules_match_the_protos"


def floors() -> dict[str, str]:
    """``name -> version`` of every runtime dependency and of the sandbox extra, at its floor."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for text in [*project["dependencies"], *project["optional-dependencies"]["sandbox"]]:
        requirement = Requirement(text)
        lowest = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lowest) == 1, f"{text}: every dependency declares one floor (>=)"
        found[requirement.name.lower()] = lowest[0]
    return found


def _run(*args: str | Path, cwd: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **env},
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def _venv(path: Path) -> Path:
    """A new venv (no access to this one's packages); its bin directory."""
    _run(sys.executable, "-m", "venv", path, cwd=path.parent)
    return path / "bin"


def _installed(bin_dir: Path) -> dict[str, str]:
    listing = _run(bin_dir / "pip", "list", "--format=json", cwd=bin_dir).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listing)}


def _push(bin_dir: Path, sandbox: Sandbox, image: str, *extra: str, cwd: Path) -> dict[str, object]:
    config = sandbox.ssh_config_path
    out = _run(
        bin_dir / "nodeload", "push", image, *extra, "--node", "node-1", "-F", config, "--json", cwd=cwd
    ).stdout
    (node,) = json.loads(out)["nodes"]
    assert node["status"] == "ok", node
    return dict(node)


def test_declared_floors_install_and_push(
    tmp_path: Path, node_sandbox: Sandbox, app_images: dict[str, str]
) -> None:
    """The lowest versions pyproject admits: the unit suite passes and a push from the Docker
    engine (its default path: the Engine API, an aiohttp endpoint, gRPC over SSH) lands."""
    wanted = floors()
    constraints = tmp_path / "floors.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in wanted.items()))
    bin_dir = _venv(tmp_path / "venv")
    _run(
        bin_dir / "pip",
        "install",
        "-q",
        "-c",
        constraints,
        f"{REPO}[sandbox]",
        "pytest",
        "pytest-timeout",
        cwd=tmp_path,
    )
    installed = _installed(bin_dir)
    wrong = {name: installed.get(name) for name, version in wanted.items() if installed.get(name) != version}
    assert not wrong, f"not at their floors: {wrong}"

    unit = _run(bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit",
                "--deselect", _GENERATOR_CHECK, cwd=REPO)  # fmt: skip
    assert " passed" in unit.stdout and "failed" not in unit.stdout, unit.stdout[-2000:]

    node = _push(bin_dir, node_sandbox, app_images["v1"], cwd=tmp_path)
    assert node["export"] == "docker-push", node  # the engine path, through the aiohttp endpoint
    assert "docker.io/nodeload-e2e/app:v1" in image_names(node_sandbox.nodes[0])


def test_wheel_from_the_sdist_installs_and_pushes(
    tmp_path: Path, node_sandbox: Sandbox, app_layout: tuple[Path, int]
) -> None:
    """``python -m build`` (the sdist, then the wheel from it) holds every file of the package;
    the wheel, installed alone, runs and pushes."""
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    tracked = _run("git", "ls-files", "nodeload", cwd=REPO).stdout.split()
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    missing = [path for path in tracked if path not in in_wheel]
    assert not missing, f"files of the package missing from the wheel: {missing}"
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    chart = _run("git", "ls-files", "charts", cwd=REPO).stdout.split()
    assert chart and not set(chart) - in_sdist, f"chart files missing from the sdist: {set(chart) - in_sdist}"

    bin_dir = _venv(tmp_path / "venv")
    _run(bin_dir / "pip", "install", "-q", wheel, cwd=tmp_path)
    where = _run(bin_dir / "python", "-c", "import nodeload; print(nodeload.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(tmp_path / "venv")), where
    version = _run(bin_dir / "nodeload", "--version", cwd=tmp_path).stdout
    assert (
        version.strip()
        == f"nodeload {tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['version']}"
    )
    assert "--all-nodes" in _run(bin_dir / "nodeload", "push", "--help", cwd=tmp_path).stdout

    layout, size = app_layout
    node = _push(bin_dir, node_sandbox, f"oci:{layout}:v1", "--name", "example.com/wheel:v1", cwd=tmp_path)
    assert node["bytes_sent"] == size, node
    assert "example.com/wheel:v1" in image_names(node_sandbox.nodes[0])
