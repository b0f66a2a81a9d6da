"""The library's surface: every public name resolves, the types in ``push``'s signature are
public too, options are grouped by layer and accept the names of 0.1, errors speak the
library's words, and the pytest plugin leaves the user's testcontainers settings alone."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
import typing

import pytest

import nodeload
from nodeload.errors import UsageError
from nodeload.options import FanoutOptions, PushOptions, StoreOptions
from nodeload.sources.base import SourceOptions


def test_every_public_name_resolves() -> None:
    for name in nodeload.__all__:
        assert getattr(nodeload, name) is not None, name
    assert sorted(nodeload.__all__) == sorted(nodeload._WHERE)
    with pytest.raises(AttributeError):
        _ = nodeload.not_a_name


def test_the_types_in_push_signature_are_public() -> None:
    hints = typing.get_type_hints(nodeload.push)
    named = {t.__name__ for hint in hints.values() for t in _classes(hint)}
    public = set(nodeload.__all__)
    ours = {
        name for name in named if name not in {"str", "NoneType", "list", "Sequence", "Callable", "UnionType"}
    }
    assert ours <= public, ours - public
    assert {"ImageSource", "NodeSpec", "PushOptions", "ProgressSink", "Session", "NodeResult"} <= ours


def _classes(hint: object) -> list[type]:
    found = [hint] if isinstance(hint, type) else []
    for arg in typing.get_args(hint):
        found += _classes(arg)
    origin = typing.get_origin(hint)
    return found + ([origin] if isinstance(origin, type) else [])


def test_options_are_grouped_by_layer() -> None:
    options = PushOptions()
    assert {f for f in inspect.signature(PushOptions).parameters} == {"source", "ssh", "store", "fanout"}
    assert isinstance(options.store, StoreOptions) and isinstance(options.fanout, FanoutOptions)
    assert isinstance(options.source, SourceOptions)


def test_flat_settings_land_in_their_group() -> None:
    options = PushOptions.of(name="example.com/a:v1", parallel=3, export="save", tls_verify=False)
    assert options.store.name == "example.com/a:v1" and options.fanout.parallel == 3
    assert options.source.export == "save" and options.source.tls_verify is False


def test_the_flat_names_of_0_1_are_still_understood() -> None:
    options = PushOptions.of(
        containerd_socket="/run/k3s/containerd/containerd.sock",
        target="docker",
        source_tls_verify=False,
        source_socket="/run/c.sock",
        source_namespace="moby",
    )
    assert (options.store.socket, options.store.kind) == ("/run/k3s/containerd/containerd.sock", "docker")
    assert options.source.tls_verify is False
    assert (options.source.containerd_address, options.source.containerd_namespace) == ("/run/c.sock", "moby")


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(UsageError, match="'paralel'"):
        PushOptions.of(paralel=2)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (PushOptions(fanout=FanoutOptions(parallel=0)), "FanoutOptions.parallel must be at least 1"),
        (PushOptions(store=StoreOptions(namespace="k8s io")), "invalid StoreOptions.namespace"),
        (PushOptions(source=SourceOptions(export="zip")), "SourceOptions.export must be auto, save or push"),  # type: ignore[arg-type]
        (PushOptions(store=StoreOptions(kind="podman")), "StoreOptions.kind must be containerd or docker"),  # type: ignore[arg-type]
        (PushOptions(store=StoreOptions(name="a:v1")), "StoreOptions.name names one image"),
    ],
)
def test_library_errors_do_not_name_command_line_flags(options: PushOptions, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        options.check(images=2)
    assert words in str(caught.value)
    assert "--" not in str(caught.value)


def test_a_setting_is_named_as_its_reader_knows_it() -> None:
    from nodeload.wording import for_the_command_line, setting

    assert setting("name", "app:v1") == "StoreOptions.name='app:v1'"
    with for_the_command_line():
        assert setting("name", "app:v1") == "--name app:v1"
        assert setting("socket") == "--containerd-socket"
    assert setting("socket") == "StoreOptions.socket"


def test_importing_the_plugin_changes_no_environment() -> None:
    code = "import os, nodeload.pytest_plugin, nodeload.sandbox; print(sorted(os.environ))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTCONTAINERS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert eval(out.stdout) == sorted(env)


def test_ryuk_is_off_only_while_sandbox_nodes_start() -> None:
    settings = pytest.importorskip("testcontainers.core.config").testcontainers_config
    from nodeload.sandbox.node import _without_reaper

    before = settings.ryuk_disabled
    settings.ryuk_disabled = False  # the user's own choice: a reaper for their containers
    try:
        first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
        seen: list[bool] = []

        def second() -> None:
            first_in.wait()
            with _without_reaper():
                second_in.set()
                first_out.wait()
                seen.append(settings.ryuk_disabled)  # the other start ended: still off for this one

        thread = threading.Thread(target=second)
        thread.start()
        with _without_reaper():
            assert settings.ryuk_disabled is True
            first_in.set()
            second_in.wait()
        first_out.set()
        thread.join()
        assert seen == [True]
        assert settings.ryuk_disabled is False
    finally:
        settings.ryuk_disabled = before


def test_the_flags_of_0_1_are_aliases() -> None:
    from nodeload.cli.arguments import build_parser

    given = ["push", "app:v1", "--node", "n", "--via", "agent", "--target", "docker"]
    args = build_parser().parse_args(given)
    assert (args.reach, args.store) == ("agent", "docker")


def test_the_report_keeps_the_json_keys_of_0_1_for_one_release() -> None:
    from nodeload.report import NodeResult

    result = NodeResult(node="n", image="app:v1", reach="ssh", delivered_by="push")
    document = result.to_json()
    assert (document["reach"], document["delivered_by"]) == ("ssh", "push")
    assert (document["transport"], document["via"]) == ("ssh", "push")
