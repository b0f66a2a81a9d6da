"""Session fixtures for end-to-end tests: a Docker engine, the node image, a 2-node sandbox."""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

HAVE_SANDBOX_EXTRA = importlib.util.find_spec("testcontainers") is not None
if HAVE_SANDBOX_EXTRA:
    # Sandbox nodes start without Ryuk, testcontainers' reaper, whatever the user's setting.
    from nodeload.sandbox import LayerSpec, Sandbox, build_image, ensure_node_image, sweep_leftovers
    from nodeload.sandbox import docker_client as make_docker_client


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the local Docker engine; skips the e2e suite when there is none."""
    if not HAVE_SANDBOX_EXTRA:
        pytest.skip("e2e tests need the 'sandbox' extra (pip install -e '.[sandbox]')")
    try:
        client = make_docker_client()
        client.ping()
    except Exception as exc:  # no socket, no permission, daemon down...
        pytest.skip(f"no Docker engine reachable ({exc}); run scripts/ensure-docker.sh")
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _sweep_leftovers(docker_client: docker.DockerClient) -> None:
    """Remove node containers and volumes left by earlier, killed test sessions."""
    sweep_leftovers(docker_client)


@pytest.fixture(scope="session")
def node_image(docker_client: docker.DockerClient) -> str:
    """Tag of the node image, built on first use (about a minute without a registry)."""
    return ensure_node_image(docker_client)


@pytest.fixture(scope="session")
def sandbox(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """Two running nodes, reachable as node-1 and node-2 through sandbox.ssh_config_path."""
    with Sandbox(2, image=node_image, client=docker_client) as sb:
        yield sb


APP = "nodeload-e2e/app"
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def app_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """v1 and v2 of an app in the local Docker engine: same base layers, the top layer differs."""
    base = [LayerSpec(12 * MiB, "e2e-base"), LayerSpec(6 * MiB, "e2e-mid")]
    build_image(docker_client, f"{APP}:v1", "hello from v1", [*base, LayerSpec(3 * MiB, "e2e-top-1")])
    build_image(docker_client, f"{APP}:v2", "hello from v2", [*base, LayerSpec(3 * MiB, "e2e-top-2")])
    return {"v1": f"{APP}:v1", "v2": f"{APP}:v2"}


@pytest.fixture(scope="session")
def app_layout(app_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The app's v1 as an OCI layout (as buildx writes it), and the bytes of its blobs."""
    directory = tmp_path_factory.mktemp("app-layout") / "layout"
    source = f"docker-daemon:{app_images['v1']}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-compress", source, f"oci:{directory}:v1"], check=True
    )
    size = sum(blob.stat().st_size for blob in (directory / "blobs" / "sha256").iterdir())
    return directory, size


@pytest.fixture()
def node_sandbox(docker_client: docker.DockerClient, node_image: str) -> Iterator[Sandbox]:
    """One fresh, empty node per test, so byte counts start from zero."""
    with Sandbox(1, image=node_image, client=docker_client) as sb:
        yield sb
