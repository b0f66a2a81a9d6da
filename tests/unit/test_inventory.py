import textwrap
from pathlib import Path

import pytest

from nodeload.errors import NodeSourceError
from nodeload.nodes import NodeSpec
from nodeload.nodes.inventory import MAX_INVENTORY_BYTES, Inventory, load_inventory
from nodeload.platforms import Platform


def load(tmp_path: Path, text: str, name: str = "hosts") -> Inventory:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)


def load_error(tmp_path: Path, text: str, name: str = "hosts") -> str:
    with pytest.raises(NodeSourceError) as caught:
        load(tmp_path, text, name)
    return str(caught.value)


def spec(tmp_path: Path, host_line: str, *, group_vars: str = "") -> NodeSpec:
    """The NodeSpec of host ``h`` written as ``host_line`` in group ``g``."""
    inventory = load(tmp_path, f"[g]\n{host_line}\n[g:vars]\n{group_vars}\n")
    return inventory.node_spec("h")


def spec_error(tmp_path: Path, host_line: str) -> str:
    with pytest.raises(NodeSourceError) as caught:
        spec(tmp_path, host_line)
    return str(caught.value)


def names(specs: list[NodeSpec]) -> list[str]:
    return [s.name for s in specs]


# -- INI and YAML describe the same thing ---------------------------------------------

EQUIVALENT_INI = """\
    lonely ansible_host=192.0.2.9
    [web]
    web1 ansible_host=10.0.0.1 ansible_port=2222 nodeload_platform=linux/arm64
    web2 ansible_host=10.0.0.2 ansible_become=yes
    [db]
    db1 ansible_connection=docker ansible_host=kind-worker
    [prod:children]
    web
    db
    [prod:vars]
    ansible_user=deploy
    nodeload_namespace=moby
    ansible_ssh_common_args="-o ProxyJump=jump@bastion:2200"
    [all:vars]
    ansible_ssh_private_key_file=keys/id_ed25519
    nodeload_containerd_socket=/run/k3s/containerd/containerd.sock
"""

EQUIVALENT_YAML = """\
    all:
      vars:
        ansible_ssh_private_key_file: keys/id_ed25519
        nodeload_containerd_socket: /run/k3s/containerd/containerd.sock
      hosts:
        lonely: {ansible_host: 192.0.2.9}
      children:
        prod:
          vars:
            ansible_user: deploy
            nodeload_namespace: moby
            ansible_ssh_common_args: "-o ProxyJump=jump@bastion:2200"
          children:
            web:
              hosts:
                web1: {ansible_host: 10.0.0.1, ansible_port: 2222, nodeload_platform: linux/arm64}
                web2: {ansible_host: 10.0.0.2, ansible_become: true}
            db:
              hosts:
                db1: {ansible_connection: docker, ansible_host: kind-worker}
"""


def test_ini_and_yaml_give_equal_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ini = load(tmp_path, EQUIVALENT_INI, "hosts.ini")
    yml = load(tmp_path, EQUIVALENT_YAML, "hosts.yml")
    key = tmp_path / "keys" / "id_ed25519"  # relative: to the current directory, as ssh opens it
    socket = ("/run/k3s/containerd/containerd.sock",)
    web1 = NodeSpec(
        name="web1",
        address="10.0.0.1",
        user="deploy",
        port=2222,
        identity=key,
        sockets=socket,
        namespace="moby",
        platform=Platform("linux", "arm64", "v8"),
        jump="jump@bastion:2200",
    )
    db1 = NodeSpec(name="db1", sockets=socket, namespace="moby", reach="docker", container="kind-worker")
    assert ini.node_spec("web1") == yml.node_spec("web1") == web1
    assert ini.node_spec("db1") == yml.node_spec("db1") == db1
    assert ini.select(all_nodes=True) == yml.select(all_nodes=True)
    assert ini.groups() == yml.groups()
    assert set(ini.hosts()) == set(yml.hosts()) == {"lonely", "web1", "web2", "db1"}


def test_yaml_detected_by_content_without_extension(tmp_path: Path) -> None:
    inventory = load(tmp_path, EQUIVALENT_YAML, "inventory")
    assert inventory.node_spec("web2").become is True
    assert inventory.groups()["web"] == ["web1", "web2"]


def test_ini_host_line_with_colon_space_is_not_taken_for_yaml(tmp_path: Path) -> None:
    inventory = load(tmp_path, 'h nodeload_namespace="a: b"\n')
    assert inventory.node_spec("h").namespace == "a: b"


# -- hosts and groups -----------------------------------------------------------------


def test_hosts_in_ansible_order_without_duplicates(tmp_path: Path) -> None:
    # Ansible's: ungrouped (c went to g1), then g1's, then g2's.
    inventory = load(tmp_path, "c\n[g1]\nb\nc\n[g2]\na\nb\n")
    assert inventory.hosts() == ["b", "c", "a"]


def test_groups_expand_nested_children(tmp_path: Path) -> None:
    inventory = load(
        tmp_path,
        """\
        solo
        [web]
        w1
        [api]
        a1
        [frontend:children]
        web
        api
        [prod:children]
        frontend
        [prod]
        p1
        """,
    )
    groups = inventory.groups()
    assert groups["frontend"] == ["w1", "a1"]
    assert groups["prod"] == ["p1", "w1", "a1"]  # its own hosts first, then its children's
    assert groups["all"] == ["solo", "p1", "w1", "a1"]
    assert groups["ungrouped"] == ["solo"]


def test_ungrouped_holds_only_hosts_in_no_other_group(tmp_path: Path) -> None:
    yaml_text = """\
        all:
          hosts: {a: null, b: null}
          children:
            web: {hosts: {b: null}}
        """
    assert load(tmp_path, yaml_text, "i.yml").groups()["ungrouped"] == ["a"]
    assert load(tmp_path, "a\nb\n[web]\nb\n").groups()["ungrouped"] == ["a"]


def test_ini_comments_and_blank_lines(tmp_path: Path) -> None:
    inventory = load(tmp_path, "# top\n; semicolon\n\n[web] # trailing\nw1 # inline\n  \n")
    assert inventory.groups()["web"] == ["w1"]


def test_yaml_lone_string_is_a_one_entry_mapping(tmp_path: Path) -> None:
    inventory = load(tmp_path, "all:\n  children:\n    web:\n      hosts: w1\n", "i.yaml")
    assert inventory.groups()["web"] == ["w1"]


# -- variable precedence --------------------------------------------------------------


def test_precedence_all_group_child_host(tmp_path: Path) -> None:
    inventory = load(
        tmp_path,
        """\
        [parent:children]
        child
        [child]
        both nodeload_namespace=host-ns
        only-group
        [parent]
        only-parent
        [all:vars]
        nodeload_namespace=all-ns
        ansible_user=all-user
        ansible_port=2200
        [parent:vars]
        nodeload_namespace=parent-ns
        ansible_user=parent-user
        [child:vars]
        nodeload_namespace=child-ns
        """,
    )
    both = inventory.node_spec("both")
    assert (both.namespace, both.user, both.port) == ("host-ns", "parent-user", 2200)
    assert inventory.node_spec("only-group").namespace == "child-ns"
    assert inventory.node_spec("only-parent").namespace == "parent-ns"


def test_sibling_groups_alphabetical_later_wins(tmp_path: Path) -> None:
    # "zeta" is written first, but "zeta" sorts after "alpha" and so wins.
    inventory = load(
        tmp_path,
        "[zeta]\nh\n[alpha]\nh\n[zeta:vars]\nansible_user=zeta\n[alpha:vars]\nansible_user=alpha\n",
    )
    assert inventory.node_spec("h").user == "zeta"


def test_deeper_group_beats_alphabetical(tmp_path: Path) -> None:
    inventory = load(
        tmp_path,
        """\
        [zz]
        h
        [top:children]
        aa
        [aa]
        h
        [zz:vars]
        ansible_user=zz
        [aa:vars]
        ansible_user=aa
        """,
    )
    assert inventory.node_spec("h").user == "aa"  # aa is at depth 2, zz at depth 1


def test_group_priority_beats_name(tmp_path: Path) -> None:
    inventory = load(
        tmp_path,
        """\
        all:
          children:
            alpha: {hosts: {h: null}, vars: {ansible_user: alpha, ansible_group_priority: 10}}
            zeta: {hosts: {h: null}, vars: {ansible_user: zeta}}
        """,
        "i.yml",
    )
    assert inventory.node_spec("h").user == "alpha"


def test_host_vars_merge_across_lines(tmp_path: Path) -> None:
    inventory = load(tmp_path, "h ansible_user=a ansible_port=22\n[g]\nh ansible_user=b\n")
    node = inventory.node_spec("h")
    assert (node.user, node.port) == ("b", 22)


def test_ini_values_literals_on_host_lines_strings_in_vars(tmp_path: Path) -> None:
    inventory = load(tmp_path, "[a]\nh1 ansible_port=2222\n[b]\nh2\n[b:vars]\nansible_port=2223\n")
    assert inventory.node_spec("h1").port == 2222
    assert inventory.node_spec("h2").port == 2223


def test_ini_quoted_value_keeps_spaces_and_hash(tmp_path: Path) -> None:
    node = spec(tmp_path, 'h nodeload_namespace="my ns#1"')
    assert node.namespace == "my ns#1"


# -- host patterns --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("web[01:03].example.com", ["web01.example.com", "web02.example.com", "web03.example.com"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[1:10:4]", ["n1", "n5", "n9"]),
        ("n[:2]", ["n0", "n1", "n2"]),
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
    ],
)
def test_host_ranges(tmp_path: Path, pattern: str, expected: list[str]) -> None:
    assert load(tmp_path, f"[g]\n{pattern}\n").hosts() == expected
    assert load(tmp_path, f"all:\n  hosts:\n    '{pattern}':\n", "i.yml").hosts() == expected


def test_host_port_suffix(tmp_path: Path) -> None:
    inventory = load(tmp_path, "[g]\nweb[1:2]:2201\n[fe80::1]:2202\nfe80::2\nplain:2203 ansible_port=2204\n")
    assert inventory.hosts() == ["web1", "web2", "fe80::1", "fe80::2", "plain"]
    assert [inventory.node_spec(h).port for h in inventory.hosts()] == [2201, 2201, 2202, None, 2204]
    assert inventory.node_spec("fe80::2").address == "fe80::2"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("web[3:1]", "start is after the end"),
        ("web[01:100]", "equal lengths"),
        ("web[a:3]", "numbers or single letters"),
        ("web[1:3", "unbalanced"),
        ("web[1:2:0]", "positive integer"),
        ("web[0:999999]", "more than"),
        ("web:", "reserved for a port"),
        ("web:70000", "invalid port"),
    ],
)
def test_bad_host_patterns(tmp_path: Path, pattern: str, message: str) -> None:
    error = load_error(tmp_path, f"[g]\n{pattern}\n")
    assert message in error
    assert "hosts:2:" in error


# -- variables nodeload reads ---------------------------------------------------------


def test_nodeload_variables(tmp_path: Path) -> None:
    node = spec(
        tmp_path,
        "h nodeload_containerd_socket=/run/k3s/containerd/containerd.sock nodeload_namespace=k8s.io",
        group_vars="nodeload_platform=linux/x86_64",
    )
    assert node.sockets == ("/run/k3s/containerd/containerd.sock",)
    assert node.namespace == "k8s.io"
    assert node.platform == Platform("linux", "amd64")


def test_nodeload_socket_list_in_yaml(tmp_path: Path) -> None:
    inventory = load(
        tmp_path, "all:\n  hosts:\n    h: {nodeload_containerd_socket: [/a.sock, /b.sock]}\n", "i.yml"
    )
    assert inventory.node_spec("h").sockets == ("/a.sock", "/b.sock")


def test_bad_platform_names_host(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "h nodeload_platform=amd64")
    assert "'h'" in error
    assert "nodeload_platform" in error


def test_defaults(tmp_path: Path) -> None:
    assert spec(tmp_path, "h") == NodeSpec(name="h", address="h")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("yes", True),
        ("1", True),
        ("True", True),
        ("'on'", True),
        ("Y", True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("False", False),
        ("off", False),
    ],
)
def test_ansible_become(tmp_path: Path, value: str, expected: bool) -> None:
    assert spec(tmp_path, f"h ansible_become={value}").become is expected
    assert spec(tmp_path, "h", group_vars=f"ansible_become={value}").become is expected


def test_ansible_become_rejects_non_boolean(tmp_path: Path) -> None:
    assert "not a boolean" in spec_error(tmp_path, "h ansible_become=maybe")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("h", NodeSpec(name="h", address="h")),
        ("h ansible_connection=ssh ansible_host=10.1.1.1", NodeSpec(name="h", address="10.1.1.1")),
        ("h ansible_connection=smart", NodeSpec(name="h", address="h")),
        ("h ansible_connection=paramiko ansible_port=2022", NodeSpec(name="h", address="h", port=2022)),
        ("h ansible_connection=local ansible_become=yes", NodeSpec(name="h", reach="local", become=True)),
        ("h ansible_connection=docker", NodeSpec(name="h", reach="docker", container="h")),
        (
            "h ansible_connection=community.docker.docker ansible_host=k3d-node-0",
            NodeSpec(name="h", reach="docker", container="k3d-node-0"),
        ),
    ],
)
def test_ansible_connection(tmp_path: Path, line: str, expected: NodeSpec) -> None:
    assert spec(tmp_path, line) == expected


def test_unsupported_connection_names_host_and_type(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "h ansible_connection=winrm")
    assert "'h'" in error
    assert "'winrm'" in error


def test_ssh_aliases_later_name_wins(tmp_path: Path) -> None:
    node = spec(tmp_path, "h ansible_ssh_host=10.9.9.9 ansible_ssh_user=root ansible_ssh_port=2022")
    assert (node.address, node.user, node.port) == ("10.9.9.9", "root", 2022)
    both = spec(tmp_path, "h ansible_user=a ansible_ssh_user=b")
    assert both.user == "b"


@pytest.mark.parametrize(
    ("args", "jump"),
    [
        ("ansible_ssh_common_args='-J bastion'", "bastion"),
        ("ansible_ssh_common_args='-Jme@bastion:2200'", "me@bastion:2200"),
        ("ansible_ssh_common_args='-q -o ProxyJump=bastion'", "bastion"),
        ("ansible_ssh_common_args='-oProxyJump=bastion'", "bastion"),
        ("ansible_ssh_common_args='-o \"ProxyJump bastion\"'", "bastion"),
        ("ansible_ssh_extra_args='-o StrictHostKeyChecking=no -qJ bastion'", "bastion"),
        ("ansible_ssh_common_args='-J first' ansible_ssh_extra_args='-J second'", "first"),
        ("ansible_ssh_common_args='-o ProxyJump=none'", "none"),  # not the ssh config's either
        ("ansible_ssh_common_args='-i -J -o ControlMaster=auto'", None),  # -J is -i's value
        ("ansible_ssh_common_args='-o ProxyCommand=nc'", None),
    ],
)
def test_jump_hosts(tmp_path: Path, args: str, jump: str | None) -> None:
    assert spec(tmp_path, f"h {args}").jump == jump


def test_relative_key_path_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Ansible: it hands the path to ssh (-o IdentityFile=...), which opens it from there."""
    (tmp_path / "inv").mkdir()
    monkeypatch.chdir(tmp_path)  # the inventory path itself is relative too
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inventory = load_inventory(_write(tmp_path / "inv" / "hosts", "a ansible_ssh_private_key_file=k/id\n"))
    assert inventory.node_spec("a").identity == tmp_path / "k" / "id"
    (tmp_path / "inv" / "hosts").write_text(
        "a ansible_private_key_file=~/.ssh/id\nb ansible_ssh_private_key_file=/k\n"
    )
    inventory = load_inventory(Path("inv/hosts"))
    assert inventory.node_spec("a").identity == tmp_path / "home" / ".ssh" / "id"
    assert inventory.node_spec("b").identity == Path("/k")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1", "True", "[22]"])
def test_bad_port(tmp_path: Path, value: str) -> None:
    error = spec_error(tmp_path, f"h ansible_port={value}")
    assert "invalid ansible_port" in error
    assert "'h'" in error


def test_jinja_template_is_refused(tmp_path: Path) -> None:
    assert "Jinja" in spec_error(tmp_path, "h ansible_host='{{ inventory_hostname }}.lan'")


def test_wrong_variable_type(tmp_path: Path) -> None:
    inventory = load(tmp_path, "all:\n  hosts:\n    h: {ansible_user: [a, b]}\n", "i.yml")
    with pytest.raises(NodeSourceError, match="ansible_user must be a string, not a list"):
        inventory.node_spec("h")


# -- selection ------------------------------------------------------------------------

LIMIT_INVENTORY = """\
    solo
    [web]
    web1
    web2
    [db]
    db-1
    db-2
    dbx
    [prod:children]
    web
    db
    [prod]
    p1
    [staging]
    web2
    s1
    """


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        # Ansible's order: all's own order (staging's web2 comes before web's web1), then filtered.
        ("web", ["web2", "web1"]),
        ("web:db", ["web2", "web1", "db-1", "db-2", "dbx"]),
        ("web,db", ["web2", "web1", "db-1", "db-2", "dbx"]),
        ("web:&staging", ["web2"]),
        ("prod:&staging", ["web2"]),
        ("all:!db", ["solo", "p1", "web2", "s1", "web1"]),
        ("!prod", ["solo", "s1"]),
        ("prod:!web:!p1", ["db-1", "db-2", "dbx"]),
        ("web*", ["web2", "web1"]),
        ("*1", ["p1", "s1", "web1", "db-1"]),
        (r"~^db-\d", ["db-1", "db-2"]),
        ("solo:web1", ["solo", "web1"]),
        ("*", ["solo", "p1", "web2", "s1", "web1", "db-1", "db-2", "dbx"]),
        ("db[0]", ["db-1"]),
        ("db[-1]", ["dbx"]),
        ("db[1:]", ["db-2", "dbx"]),
        ("web[0:1]:&staging", ["web2"]),
    ],
)
def test_limit_patterns(tmp_path: Path, limit: str, expected: list[str]) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    assert names(inventory.select(limit=limit)) == expected


def test_limit_narrows_all_and_names(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    assert names(inventory.select(all_nodes=True, limit="staging")) == ["web2", "s1"]
    assert names(inventory.select(names=["s1", "web1", "web2"], limit="web")) == ["web1", "web2"]


@pytest.mark.parametrize("limit", ["nosuch", "web:nosuch", "all:!nosuch", "web:&nosuch"])
def test_limit_unknown_term_is_an_error(tmp_path: Path, limit: str) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError, match="no host or group 'nosuch'"):
        inventory.select(limit=limit)


def test_limit_typo_suggests(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError, match="did you mean 'staging'"):
        inventory.select(limit="stagin")


@pytest.mark.parametrize("limit", ["web:&db", "zzz*", "~^q"])
def test_empty_selection_echoes_pattern(tmp_path: Path, limit: str) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError) as caught:
        inventory.select(limit=limit)
    assert repr(limit) in str(caught.value)
    assert "matches no host" in str(caught.value)


def test_limit_empty_within_names(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError, match="among the named hosts"):
        inventory.select(names=["solo"], limit="web")


@pytest.mark.parametrize("limit", ["", " , ", "web:!"])
def test_limit_empty_terms(tmp_path: Path, limit: str) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError, match="empty"):
        inventory.select(limit=limit)


def test_limit_bad_regex(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError, match="invalid term"):
        inventory.select(limit="~web(")


def test_limit_ipv6(tmp_path: Path) -> None:
    inventory = load(tmp_path, "fe80::1\nfe80::2\n2001:db8::5\n")
    assert names(inventory.select(limit="fe80::1")) == ["fe80::1"]
    assert names(inventory.select(limit="fe80::1,2001:db8::5")) == ["fe80::1", "2001:db8::5"]
    assert names(inventory.select(limit="all,!fe80::2")) == ["fe80::1", "2001:db8::5"]


def test_select_names(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    assert names(inventory.select(names=["p1", "solo", "p1"])) == ["p1", "solo"]
    assert names(inventory.select(names="solo")) == ["solo"]


def test_select_unknown_name_lists_known_hosts(tmp_path: Path) -> None:
    inventory = load(tmp_path, LIMIT_INVENTORY)
    with pytest.raises(NodeSourceError) as caught:
        inventory.select(names=["web3"])
    message = str(caught.value)
    assert "'web3'" in message
    assert "did you mean" in message
    assert "solo, web1, web2, db-1, db-2 and 3 more" in message


def test_select_nothing_requested(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError, match="no host selected"):
        load(tmp_path, LIMIT_INVENTORY).select()


def test_select_all_of_empty_inventory(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError, match="has no hosts"):
        load(tmp_path, "# nothing\n").select(all_nodes=True)


def test_node_spec_unknown_host(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError, match="no host 'nope'"):
        load(tmp_path, "a\n").node_spec("nope")


# -- bad files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError, match="does not exist") as caught:
        load_inventory(tmp_path / "absent.ini")
    assert "absent.ini" in str(caught.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NodeSourceError, match="is a directory"):
        load_inventory(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "locked.ini", "a\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)  # chmod 000 does not stop root
    with pytest.raises(NodeSourceError, match=r"cannot read inventory .*locked\.ini: Permission denied"):
        load_inventory(path)


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with path.open("wb") as file:
        file.truncate(MAX_INVENTORY_BYTES + 1)
    with pytest.raises(NodeSourceError, match="larger than 16 MiB"):
        load_inventory(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1"
    path.write_bytes(b"h\xe9\n")
    with pytest.raises(NodeSourceError, match="not UTF-8"):
        load_inventory(path)


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("[web]\nw1\nw2 ansible_port\n", 3, "expected key=value"),
        ("[web]\nw1 a='unclosed\n", 2, "cannot split"),
        ("[web:vars]\nnot a pair\n[web]\n", 2, "expected key=value"),
        ("[web:children]\na b\n", 2, "expected a group name"),
        ("[web:bogus]\n", 1, "unknown section type"),
        ("[web server]\n", 1, "invalid section header"),
        ("[web:children]\nmissing\n", 2, "names group 'missing'"),
        ("a\n[ghost:vars]\nx=1\n", 2, "[ghost:vars]"),
        ("---\n- a\n", 1, "YAML"),
    ],
)
def test_malformed_ini_names_file_and_line(tmp_path: Path, text: str, lineno: int, message: str) -> None:
    error = load_error(tmp_path, text, "broken.ini")
    assert f"broken.ini:{lineno}:" in error
    assert message in error


def test_children_declared_later_is_fine(tmp_path: Path) -> None:
    inventory = load(tmp_path, "[prod:children]\nweb\n[prod:vars]\nx=1\n[web]\nw1\n")
    assert inventory.groups()["prod"] == ["w1"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("all:\n  hosts: [a, b\n", "line 3, column 1"),
        ("all:\n  hosts:\n    a: {x: 1\n", "line 4"),
        ("all:\n\thosts: {}\n", "line 2, column 1"),
        ("all:\n  vars: {d: 2001-13-01}\n", "month"),
    ],
)
def test_malformed_yaml(tmp_path: Path, text: str, where: str) -> None:
    error = load_error(tmp_path, text, "bad.yml")
    assert "bad.yml" in error
    assert "malformed YAML" in error
    assert where in error


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("all:\n  children:\n    web:\n      hosts: [a, b]\n", "all.children.web.hosts", "not a list"),
        ("all:\n  vars: [a]\n", "all.vars", "variables must be a mapping"),
        ("all:\n  hosts:\n    a: 3\n", "all.hosts.a", "variables must be a mapping"),
        ("all:\n  children: [web]\n", "all.children", "mapping of group names"),
        ("all:\n  children:\n    web: [a]\n", "all.children.web", "a group is a mapping"),
        ("all:\n  children:\n    web:\n      host: {a: null}\n", "all.children.web.host", "unexpected key"),
        ("all:\n  hosts:\n    yes: null\n", "all.hosts", "True is a boolean"),
        ("all:\n  hosts:\n    'web[1:3':\n", "all.hosts.web[1:3", "unbalanced"),
        ("- a\n- b\n", "", "not a list"),
    ],
)
def test_wrong_yaml_types_name_the_path(tmp_path: Path, text: str, path: str, message: str) -> None:
    error = load_error(tmp_path, text, "inv.yaml")
    assert error.startswith(f"{tmp_path / 'inv.yaml'}: {path}")
    assert message in error


def test_yaml_plugin_config_is_explained(tmp_path: Path) -> None:
    error = load_error(tmp_path, "plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n", "aws_ec2.yml")
    assert "ansible-inventory" in error
    assert "amazon.aws.aws_ec2" in error


def test_empty_yaml_file_has_no_hosts(tmp_path: Path) -> None:
    assert load(tmp_path, "", "empty.yml").hosts() == []


@pytest.mark.parametrize(
    ("text", "name", "cycle"),
    [
        ("[a:children]\nb\n[b:children]\nc\n[c:children]\na\n", "hosts", "a -> b -> c -> a"),
        ("[x:children]\nall\n", "hosts", "all -> x -> all"),
        (
            "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
            "i.yml",
            "a -> b -> a",
        ),
        ("all:\n  children:\n    a: &loop\n      children:\n        b: *loop\n", "i.yml", "b -> b"),
    ],
)
def test_group_cycles(tmp_path: Path, text: str, name: str, cycle: str) -> None:
    error = load_error(tmp_path, text, name)
    assert "cycle" in error
    assert cycle in error


def test_yaml_alias_fan_out_is_cheap(tmp_path: Path) -> None:
    # Each level holds ten groups sharing the level below's body: 10**8 paths, 80 groups.
    lines = ["l0: &l0 {hosts: {h: null}}"]
    for level in range(1, 9):
        kids = ", ".join(f"k{level}_{i}: *l{level - 1}" for i in range(10))
        lines.append(f"l{level}: &l{level} {{children: {{{kids}}}}}")
    inventory = load(tmp_path, "\n".join(lines) + "\n", "laughs.yml")
    assert inventory.hosts() == ["h"]
    assert inventory.groups()["l8"] == ["h"]


def test_bad_group_priority(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[g]\nh\n[g:vars]\nansible_group_priority=high\n")
    assert "ansible_group_priority" in error
    assert "'g'" in error


# -- as Ansible reads it (the differential suite compares these with ansible-core itself) ---------


def test_group_and_host_vars_files_beside_the_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_user: deploy\nansible_port: 2200\n")
    (tmp_path / "group_vars" / "web.yml").write_text("ansible_port: 2201\n")
    (tmp_path / "host_vars" / "w2.yml").write_text("ansible_user: own\n")
    inventory = load(tmp_path, "[web]\nw1\nw2\n")
    assert (inventory.node_spec("w1").user, inventory.node_spec("w1").port) == ("deploy", 2201)
    assert inventory.node_spec("w2").user == "own"


def test_a_vault_encrypted_vars_file_says_to_install_ansible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6638\n")
    assert "install ansible-core" in load_error(tmp_path, "[web]\nw1\n")


def test_the_first_port_of_a_host_wins(tmp_path: Path) -> None:
    inventory = load(tmp_path, "[a]\nh:2222\n[b]\nh:3333\n")
    assert inventory.node_spec("h").port == 2222


def test_a_regex_keeps_its_brackets_and_subscripts_follow_ansible_order(tmp_path: Path) -> None:
    inventory = load(tmp_path, "[web:children]\neu\n[web]\nw0\n[eu]\neu1\neu2\n[x]\nweb01\nweb02\nweb03\n")
    assert names(inventory.select(limit="~web0[12]")) == ["web01", "web02"]
    assert names(inventory.select(limit="web[0]")) == ["w0"]  # its own hosts, then its children's
    assert names(inventory.select(limit="web[1-2]")) == ["eu1", "eu2"]  # the deprecated form


def test_limit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "limits").write_text("web1\n\n!web2\nstaging\n")
    assert names(load(tmp_path, LIMIT_INVENTORY).select(limit="@limits")) == ["s1", "web1"]  # all's order


def test_a_proxy_command_in_the_ssh_args_fails_that_host(tmp_path: Path) -> None:
    node = spec(tmp_path, "h ansible_ssh_common_args='-o ProxyCommand=\"ssh -W %h:%p bastion\"'")
    assert node.problem is not None and "ProxyCommand" in node.problem and node.address is None


def test_a_script_inventory_says_to_install_ansible(tmp_path: Path) -> None:
    path = tmp_path / "inventory.py"
    path.write_text("#!/usr/bin/env python3\nprint('{}')\n")
    path.chmod(0o755)
    with pytest.raises(NodeSourceError, match="install ansible-core"):
        load_inventory(path)
