"""Reading a node's registry mirror configuration (nodeload.mirror.parse_mirrors)."""

from __future__ import annotations

from nodeload.mirror import CERTS_DIR, K3S_REGISTRIES, parse_mirrors

SPEGEL_HOSTS_TOML = """\
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:30020"]
  capabilities = ["pull", "resolve"]

[host."http://127.0.0.1:30021"]
  capabilities = ["pull", "resolve"]
"""


def test_spegel_hosts_toml_names_the_local_mirror() -> None:
    mirror = parse_mirrors("docker.io", {f"{CERTS_DIR}/docker.io/hosts.toml": SPEGEL_HOSTS_TOML})
    assert mirror is not None
    assert (mirror.endpoint, mirror.source) == ("http://127.0.0.1:30020", f"{CERTS_DIR}/docker.io/hosts.toml")


def test_a_host_that_may_not_pull_is_no_mirror() -> None:
    push_only = '[host."https://mirror.example:5000"]\n  capabilities = ["push"]\n'
    assert parse_mirrors("docker.io", {"hosts.toml": push_only}) is None
    assert parse_mirrors("docker.io", {"hosts.toml": 'server = "https://registry-1.docker.io"\n'}) is None
    assert parse_mirrors("docker.io", {"hosts.toml": "this is [not toml"}) is None


def test_k3s_registries_yaml_and_its_embedded_registry() -> None:
    with_endpoint = "mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.example:5000\n"
    embedded = 'mirrors:\n  "*":\n'  # k3s --embedded-registry: every registry through its peers
    mirror = parse_mirrors("docker.io", {K3S_REGISTRIES: with_endpoint})
    assert mirror is not None and mirror.endpoint == "https://mirror.example:5000"
    assert parse_mirrors("ghcr.io", {K3S_REGISTRIES: with_endpoint}) is None
    wildcard = parse_mirrors("ghcr.io", {K3S_REGISTRIES: embedded})
    assert wildcard is not None and wildcard.endpoint == "k3s embedded registry"


def test_no_files_no_mirror() -> None:
    assert parse_mirrors("docker.io", {}) is None
    assert parse_mirrors("docker.io", {f"{CERTS_DIR}/docker.io/hosts.toml": ""}) is None


def test_seeds_are_the_nodes_with_the_least_to_receive() -> None:
    from nodeload.fanout import pick_seeds

    missing = {0: 250.0, 1: 5.0, 2: 0.0, 3: float("inf"), 4: 5.0}
    assert pick_seeds(missing, 1) == {2}  # holds it all
    assert pick_seeds(missing, 3) == {2, 1, 4}  # then the fewest bytes, ties in selection order
    assert pick_seeds({0: 9.0, 1: 9.0, 2: 9.0}, 2) == {0, 1}  # all alike: the first ones
