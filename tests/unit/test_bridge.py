"""How the relay for a node's socket is chosen from what the node said (pure decisions)."""

from __future__ import annotations

import pytest

from nodeload.transports.bridge import NoRelay, Probe, Relay, SocketUnavailable, choose_relay

SOCK = "/run/containerd/containerd.sock"


def probe(**changes: object) -> Probe:
    base = {"access": "rw", "relays": ("socat", "python3"), "sudo": "none", "user": "ubuntu", "connect": "ok"}
    return Probe(**{**base, **changes})  # type: ignore[arg-type]


def test_probe_output_is_parsed() -> None:
    found = Probe.parse("access=denied\nrelay=nc\nrelay=python3\nsudo=ok\nuser=ubuntu\nnoise\n")
    assert found == Probe("denied", ("nc", "python3"), "ok", "ubuntu")


@pytest.mark.parametrize(
    ("found", "may_sudo", "relay"),
    [
        (probe(), False, Relay("socat", sudo=False)),
        (probe(relays=("python3",)), False, Relay("python3", sudo=False)),
        (probe(access="denied", sudo="ok", connect="untested"), True, Relay("socat", sudo=True)),
        (probe(access="denied", sudo="root", connect="untested"), False, Relay("socat", sudo=False)),
    ],
)
def test_the_relay_chosen(found: Probe, may_sudo: bool, relay: Relay) -> None:
    assert choose_relay(found, SOCK, may_sudo=may_sudo) == relay


@pytest.mark.parametrize(
    ("found", "may_sudo", "kind", "says"),
    [
        (probe(access="missing"), True, SocketUnavailable, "does not exist"),
        (probe(connect="refused"), True, SocketUnavailable, "is containerd running"),
        (probe(access="denied"), False, SocketUnavailable, "NodeSpec.sudo"),
        (probe(access="hidden"), False, SocketUnavailable, "may not enter /run/containerd"),
        (
            probe(access="denied", sudo="password"),
            True,
            SocketUnavailable,
            "sudo on the node wants a password",
        ),
        (probe(access="denied", sudo="none"), True, SocketUnavailable, "has no sudo"),
        (probe(relays=()), True, NoRelay, "none of socat"),
    ],
)
def test_why_there_is_no_relay(found: Probe, may_sudo: bool, kind: type[Exception], says: str) -> None:
    with pytest.raises(kind, match=says) as err:
        choose_relay(found, SOCK, may_sudo=may_sudo)
    assert type(err.value) is kind
    assert getattr(err.value, "missing", False) == (found.access == "missing")


def test_relay_commands_quote_the_path() -> None:
    path = "/run/odd dir/containerd.sock"
    assert (
        Relay("socat", sudo=True).command(path)
        == "exec sudo -n socat - UNIX-CONNECT:'/run/odd dir/containerd.sock'"
    )
    assert Relay("nc", sudo=False).command(path) == "exec nc -U '/run/odd dir/containerd.sock'"
    assert Relay("python3", sudo=False).command(path).endswith("'/run/odd dir/containerd.sock'")
    assert Relay("socat", sudo=True).label == "sudo:socat"
