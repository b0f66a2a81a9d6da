"""The config file's defaults against nodeload's real parser: precedence (flag > environment >
file > built-in), tables, paths, and the errors a user gets for a file nodeload cannot use."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from nodeload.cli import main
from nodeload.cli.arguments import build_parser
from nodeload.cli.config import ENVIRONMENT, ConfigError, config_path, parse

PACKAGE = Path(__file__).resolve().parents[2] / "nodeload"


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config file, environment variable or home of the person running the tests."""
    for variable in ("NODELOAD_CONFIG", "XDG_CONFIG_HOME", *ENVIRONMENT.values()):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _parse(path: Path | None, *argv: str) -> argparse.Namespace:
    return parse(build_parser, argv, path)


def test_file_values_become_defaults_a_flag_replaces(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '[defaults]\nnode = ["a", "b"]\nreach = "ssh"\n\n[push]\nnamespace = "moby"\nparallel = 4\n'
        'persist = "10m"\nall-nodes = true\n',
    )
    args = _parse(path, "push", "app:dev")
    assert (args.node, args.reach, args.namespace, args.parallel) == (["a", "b"], "ssh", "moby", 4)
    assert (args.persist, args.all_nodes) == (600.0, True)
    assert str(args.origins.origin("namespace")) == f"config file {path}"
    assert args.origins.origin("context").source == "default"

    args = _parse(path, "push", "app:dev", "--node", "c", "--parallel", "2", "--namespace", "k8s.io")
    assert (args.node, args.parallel, args.namespace) == (["c"], 2, "k8s.io")  # not a, b, c
    assert args.origins.origin("node").source == "flag"
    assert args.origins.origin("reach").source == "config"


def test_a_commands_table_wins_over_defaults_and_stays_its_own(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '[defaults]\nnamespace = "shared"\nall-nodes = true\n[push]\nnamespace = "pushed"\n'
        "all-nodes = false\n",
    )
    pushed = _parse(path, "push", "x")
    assert (pushed.namespace, pushed.all_nodes) == ("pushed", False)
    listed = _parse(path, "nodes")
    assert (listed.namespace, listed.all_nodes) == ("shared", True)
    assert _parse(path, "gc").namespace == ["shared"]  # gc's --namespace repeats: a list of one
    assert _parse(path, "cache", "prune").origins.origin("namespace").source == "default"


def test_subcommand_tables(tmp_path: Path) -> None:
    path = _file(tmp_path, '[cache.prune]\nmax-size = "10G"\nolder-than = "30d"\n')
    args = _parse(path, "cache", "prune")
    assert args.max_size == 10 * 1024**3
    assert args.older_than.days == 30
    assert args.origins.command == ("cache", "prune")


def test_paths_are_read_next_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _file(
        tmp_path,
        '[defaults]\ninventory = "hosts.ini"\nssh-config = "~/ssh/config"\nidentity = "/keys/id"\n',
    )
    args = _parse(path, "nodes")
    assert args.inventory == tmp_path / "conf" / "hosts.ini"
    assert args.ssh_config == tmp_path / "home" / "ssh" / "config"
    assert args.identity == Path("/keys/id")
    assert _parse(path, "nodes", "--inventory", "mine.ini").inventory == Path("mine.ini")  # a flag: cwd's


def test_the_environment_beats_the_file_and_a_flag_beats_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, '[push]\npersist = "10m"\n')
    monkeypatch.setenv("NODELOAD_PERSIST", "2m")
    args = _parse(path, "push", "x")
    assert args.persist == 120.0
    assert str(args.origins.origin("persist")) == "environment NODELOAD_PERSIST"
    flagged = _parse(path, "push", "x", "--persist", "off")
    assert (flagged.persist, flagged.origins.origin("persist").source) == (None, "flag")
    monkeypatch.setenv("NODELOAD_PERSIST", "")  # set but empty: as unset
    assert _parse(path, "push", "x").persist == 600.0
    monkeypatch.setenv("NODELOAD_PERSIST", "3m")
    alone = _parse(None, "push", "x")  # no file: the environment still says it set the value
    assert (alone.persist, str(alone.origins.origin("persist"))) == (180.0, "environment NODELOAD_PERSIST")


def test_an_option_added_to_the_parser_later_is_configurable_without_code(tmp_path: Path) -> None:
    """Options and commands the parser gains: nothing in nodeload.cli.config names them."""

    def later() -> argparse.ArgumentParser:
        parser = build_parser()
        push = parser._subparsers._group_actions[0].choices["push"]  # type: ignore[union-attr]
        push.add_argument("--later-off", dest="later", action="store_const", const=None, default="on")
        push.add_argument("--later-timeout", type=float, default=300.0)
        commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
        later_command = commands.add_parser("later-command")  # type: ignore[attr-defined]
        later_command.add_argument("--node", action="append", default=[])
        return parser  # type: ignore[no-any-return]

    path = _file(
        tmp_path,
        '[push]\nlater-off = true\nlater-timeout = 60\n[later-command]\nnode = ["n1"]\n',
    )
    args = parse(later, ["push", "x"], path)
    assert (args.later, args.later_timeout) == (None, 60.0)
    assert parse(later, ["later-command"], path).node == ["n1"]


def test_no_persist_and_persist_from_the_file(tmp_path: Path) -> None:
    off = _file(tmp_path, "[push]\nno-persist = true\n")
    assert parse(build_parser, ["push", "x"], off).persist is None
    ten = _file(tmp_path, '[push]\npersist = "10m"\n')
    assert parse(build_parser, ["push", "x"], ten).persist == 600.0
    assert parse(build_parser, ["push", "x", "--no-persist"], ten).persist is None  # the flag wins


def test_where_the_file_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path() is None  # no file at ~/.config/nodeload/config.toml: none, no error
    default = tmp_path / "home" / ".config" / "nodeload" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text("")
    assert config_path() == default
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() is None
    (tmp_path / "xdg" / "nodeload").mkdir(parents=True)
    (tmp_path / "xdg" / "nodeload" / "config.toml").write_text("")
    assert config_path() == tmp_path / "xdg" / "nodeload" / "config.toml"
    monkeypatch.setenv("NODELOAD_CONFIG", str(tmp_path / "named.toml"))
    assert config_path() == tmp_path / "named.toml"  # named: used, so a missing one is an error
    with pytest.raises(ConfigError, match=r"named\.toml: cannot read the config file"):
        parse(build_parser, ["nodes"])
    monkeypatch.setenv("NODELOAD_CONFIG", "")
    assert config_path() is None  # set and empty: no file at all


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[push]\nnamespace = "x"\nnamespce = "y"\n',
            r"line 3: \[push\] unknown setting 'namespce' "
            r"\(did you mean 'namespace'\?\); \[push\] accepts: address-type, .*namespace, ",
        ),
        (
            "[defaults]\nimages = 1\n",
            r"line 2: \[defaults\] unknown setting 'images'; \[defaults\] accepts: ",
        ),
        (
            'inventory = "h.ini"\n',
            r"line 1: 'inventory' is not a command: settings go under \[defaults\] "
            r"or one of \[push\], \[nodes\]",
        ),
        ("[pusj]\nnode = []\n", r"line 1: 'pusj' is not a command"),
        ('[push]\nparallel = "four"\n', r"line 2: \[push\] parallel = 'four': expected an integer"),
        ('[nodes]\n\ncheck = "yes"\n', r"line 3: \[nodes\] check = 'yes': expected true or false"),
        ('[push]\nexport = "zip"\n', r"\[push\] export = 'zip': one of auto, save, push"),
        ('[push]\npersist = "forever"\n', r"\[push\] persist = 'forever': invalid duration 'forever'"),
        ("[push]\nnamespace = 5\n", r"\[push\] namespace = 5: expected a string"),
        ("[push]\nnode = [1]\n", r"\[push\] node = 1: expected a string"),
        ("[push\n", r"not valid TOML: .*line 1"),
    ],
)
def test_a_file_nodeload_cannot_use_is_a_usage_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    expected: str,
) -> None:
    path = _file(tmp_path, text)
    monkeypatch.setenv("NODELOAD_CONFIG", str(path))
    assert main(["nodes", "--node", "n"]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"nodeload: error: {path}: "), message
    assert re.search(expected, message), message


def test_every_nodeload_variable_the_command_line_reads_is_a_layer() -> None:
    """A NODELOAD_* variable read in nodeload/cli sets an option's default: it must be listed in
    ENVIRONMENT, or the file's value would silently beat it."""
    read = set()
    for source in (PACKAGE / "cli").rglob("*.py"):
        read |= set(
            re.findall(r"(?:environ\.get\(|getenv\(|environ\[)\s*\"(NODELOAD_[A-Z_]+)\"", source.read_text())
        )
    not_options = {"NODELOAD_CONFIG", "NODELOAD_COMPLETION_TIMEOUT"}  # the file itself; Tab's patience
    assert read - not_options <= set(ENVIRONMENT.values()), read
