"""nodeload's own inventory reader against ansible-core, on a corpus of inventories and limits.

For each inventory, ansible-core (the dev extra installs it) answers through its own library,
exactly as ``ansible -i INV all --list-hosts --limit L`` and ``ansible-inventory -i INV --list``
do: ``InventoryManager.subset`` + ``get_hosts("all")`` for the selection and its order,
``VariableManager.get_vars`` for each host's variables (``group_vars/``, ``host_vars/`` and
precedence included). nodeload's built-in reader (what runs where Ansible is not installed) must
give the same hosts in the same order and the same connection variables. The reader that runs
where Ansible *is* installed (through ``ansible-inventory``/``ansible``) is checked on a few of
them too.

Deliberate differences are listed in ``DELIBERATE`` with their reason, and each is asserted.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodeload.errors import NodeSourceError
from nodeload.nodes.inventory import load_inventory
from nodeload.nodes.inventory.ansible import ansible_tools, select_with_ansible
from nodeload.nodes.inventory.hostvars import _USED_VARS

pytestmark = pytest.mark.integration

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cryptography's DSA deprecation, through ansible's ssh agent
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

# What nodeload does differently on purpose, and why.
DELIBERATE = {
    "unknown-pattern": "a --limit term that matches no host or group: Ansible warns and goes on with "
    "fewer hosts, nodeload stops (a mistyped name would silently push to fewer nodes)",
}


@dataclass(frozen=True)
class Case:
    """An inventory (its first file), files beside it, and limits to compare."""

    name: str
    files: dict[str, str]
    limits: tuple[str, ...] = ("all",)
    deliberate: dict[str, str] = field(default_factory=dict)  # limit -> key of DELIBERATE


LIMIT_INI = """\
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

CORPUS = [
    Case("flat-ini", {"hosts": "a\nb\nc\n"}, ("all", "a:c", "b", "*", "!b")),
    Case(
        "groups-ini",
        {"hosts": LIMIT_INI},
        ("all", "web", "web:db", "web,db", "web:&staging", "prod:&staging"),
    ),
    Case("exclusions", {"hosts": LIMIT_INI}, ("all:!db", "!prod", "prod:!web:!p1", "staging:!web2")),
    Case("wildcards", {"hosts": LIMIT_INI}, ("web*", "*1", "*", "d?-*", "db-[12]")),
    Case("regex", {"hosts": LIMIT_INI}, (r"~^db-\d", "~web", "~(web|db)1", "~.*x$")),
    Case(
        "regex-with-brackets",
        {"hosts": "[web]\nweb01\nweb02\nweb03\n"},
        ("~web0[12]", "~web0[1-3]$", "~^w.b0[3]"),
    ),
    Case(
        "subscripts",
        {"hosts": LIMIT_INI},
        ("db[0]", "db[-1]", "db[1:]", "db[0:1]", "web[0:1]:&staging", "prod[0]", "prod[1:2]", "prod[-1]"),
    ),
    Case(
        "subscript-group-with-children",
        {"hosts": "[web:children]\neu\nus\n[web]\nw0\n[eu]\neu1\neu2\n[us]\nus1\n"},
        ("web[0]", "web[1]", "web[-1]", "web[1:]", "web[0:2]", "web[2:3]"),
    ),
    Case("deprecated-dash-subscript", {"hosts": "[web]\nw1\nw2\nw3\n"}, ("web[1-2]", "web[0-1]", "web[2:0]")),
    Case(
        "subscript-out-of-range",
        {"hosts": "[web]\nw1\nw2\n"},
        ("web[5]", "web[1:9]"),
    ),
    Case(
        "nested-children-order",
        {
            "hosts": "[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nl1\n"
            "[mid]\nm1\n[top]\nt1\n[other]\no1\n"
        },
        ("all", "top", "mid", "top[0]", "top[-1]"),
    ),
    Case(
        "host-ranges",
        {"hosts": "[web]\nweb[01:04]\n[db]\ndb-[a:c]\nx[0:10:5]\n"},
        ("all", "web", "db[1:]", "~web0[2-3]"),
    ),
    Case(
        "ports-first-wins",
        {"hosts": "[a]\nh:2222\n[b]\nh:3333\nk:2200 ansible_port=2300\n[c]\nk:2400\n"},
        ("all", "b"),
    ),
    Case(
        "ipv6-hosts",
        {"hosts": "fe80::1\n[v6]\n[2001:db8::5]:2222\n2001:db8::6\n"},
        ("all", "v6", "fe80::1", "fe80::1,v6"),
    ),
    Case(
        "precedence-depth-priority-name",
        {
            "hosts": textwrap.dedent(
                """\
                [zz]
                h
                [top:children]
                aa
                [aa]
                h
                [zeta]
                h2
                [alpha]
                h2
                [zz:vars]
                ansible_user=zz
                [aa:vars]
                ansible_user=aa
                [zeta:vars]
                ansible_user=zeta
                [alpha:vars]
                ansible_user=alpha
                ansible_port=2201
                [all:vars]
                ansible_port=2200
                ansible_user=everyone
                """
            )
        },
    ),
    Case(
        "group-priority",
        {
            "hosts.yml": textwrap.dedent(
                """\
                all:
                  children:
                    alpha: {hosts: {h: null}, vars: {ansible_user: alpha, ansible_group_priority: 10}}
                    zeta: {hosts: {h: null}, vars: {ansible_user: zeta}}
                """
            )
        },
    ),
    Case(
        "yaml-full",
        {
            "inventory.yaml": textwrap.dedent(
                """\
                all:
                  vars:
                    ansible_ssh_private_key_file: keys/id_ed25519
                  hosts:
                    lonely: {ansible_host: 192.0.2.9}
                  children:
                    prod:
                      vars: {ansible_user: deploy, nodeload_namespace: moby}
                      children:
                        web:
                          hosts:
                            web1: {ansible_host: 10.0.0.1, ansible_port: 2222}
                            web2: {ansible_host: 10.0.0.2, ansible_become: true}
                        db:
                          hosts:
                            db1: {ansible_connection: docker, ansible_host: kind-worker}
                """
            )
        },
        ("all", "prod", "web:db", "prod[1]", "lonely"),
    ),
    Case(
        "yaml-host-ports",
        {
            "hosts.yml": "all:\n  children:\n    a: {hosts: {'h:2222': null}}\n"
            "    b: {hosts: {'h:3333': {ansible_user: u}}}\n"
        },
    ),
    Case(
        "group-vars-all",
        {
            "hosts": "[web]\nw1\nw2 ansible_user=own\n",
            "group_vars/all.yml": "ansible_user: deploy\nansible_port: 2202\n",
        },
        ("all", "web"),
    ),
    Case(
        "group-vars-group-beats-all",
        {
            "hosts": "[web]\nw1\n[web:vars]\nansible_port=2000\n",
            "group_vars/all.yml": "ansible_user: from-all\nansible_port: 1000\n",
            "group_vars/web.yaml": "ansible_user: from-web\n",
        },
    ),
    Case(
        "group-vars-beat-inventory-vars",
        {
            "hosts": "[web]\nw1\n[web:vars]\nansible_user=inline\n"
            "[all:vars]\nnodeload_namespace=inline-all\n",
            "group_vars/all": "nodeload_namespace: file-all\n",
            "group_vars/web.json": '{"ansible_user": "from-json"}',
        },
    ),
    Case(
        "group-vars-directory",
        {
            "hosts": "[web]\nw1\n",
            "group_vars/web/10-base.yml": "ansible_user: base\nansible_port: 2222\n",
            "group_vars/web/20-override.yml": "ansible_user: override\n",
            "group_vars/web/sub/30-deeper.yaml": "nodeload_namespace: deep\n",
            "group_vars/web/.hidden.yml": "ansible_user: hidden\n",
            "group_vars/web/40-backup.yml~": "ansible_user: backup\n",
            "group_vars/web/50-notes.txt": "ansible_user: text\n",
        },
    ),
    Case(
        "group-vars-first-file-form-wins",
        {
            "hosts": "[web]\nw1\n",
            "group_vars/web": "ansible_user: bare\n",
            "group_vars/web.yml": "ansible_user: yml\n",
        },
    ),
    Case(
        "host-vars",
        {
            "hosts": "[web]\nw1 ansible_user=inline\nw2\n[web:vars]\nansible_port=2000\n",
            "host_vars/w1.yml": "ansible_user: from-host-vars\n",
            "host_vars/w2/main.yml": "ansible_host: 192.0.2.2\n",
            "group_vars/web.yml": "ansible_port: 2100\n",
        },
    ),
    Case(
        "group-vars-deeper-group-wins",
        {
            "hosts": "[parent:children]\nchild\n[child]\nh\n",
            "group_vars/child.yml": "ansible_user: child\n",
            "group_vars/parent.yml": "ansible_user: parent\nansible_port: 2022\n",
        },
    ),
    Case(
        "ssh-aliases-later-name",
        {"hosts": "[g]\na ansible_host=one ansible_ssh_host=two ansible_user=u1 ansible_ssh_user=u2\n"},
    ),
    Case(
        "connections-and-become",
        {
            "hosts": textwrap.dedent(
                """\
                [mixed]
                l ansible_connection=local
                d ansible_connection=docker ansible_host=ctr
                p ansible_connection=paramiko ansible_become=yes
                s ansible_become=no
                [mixed:vars]
                ansible_become=true
                """
            )
        },
        ("all", "mixed[1:2]"),
    ),
    Case(
        "ssh-args",
        {
            "hosts": textwrap.dedent(
                """\
                [g]
                a ansible_ssh_common_args='-o ProxyJump=jump@bastion:2200'
                b ansible_ssh_extra_args='-J x,y'
                [g:vars]
                ansible_ssh_common_args='-o StrictHostKeyChecking=no'
                """
            )
        },
    ),
    Case(
        "nodeload-vars",
        {
            "hosts.yml": textwrap.dedent(
                """\
                all:
                  vars: {nodeload_containerd_socket: /run/k3s/containerd/containerd.sock}
                  hosts:
                    a: {nodeload_namespace: moby, nodeload_platform: linux/arm64}
                    b: {nodeload_containerd_socket: [/run/a.sock, /run/b.sock]}
                """
            )
        },
    ),
    Case(
        "ungrouped-and-all-hosts",
        {
            "hosts.yml": "all:\n  hosts: {a: null, b: null}\n"
            "  children:\n    web: {hosts: {b: null, c: null}}\n"
        },
        ("all", "ungrouped", "web", "all[0]"),
    ),
    Case("ungrouped-ini", {"hosts": "x\ny\n[g]\ny\nz\n"}, ("all", "ungrouped", "g", "ungrouped:g")),
    Case(
        "host-named-like-pattern",
        {"hosts": "[web]\nweb1\n[web1g]\nweb1\nweb12\n"},
        ("web1", "web1*", "web1g[0]", "&web1"),
    ),
    Case(
        "intersection-only",
        {"hosts": LIMIT_INI},
        ("&web", "!web", "&prod:!db"),
    ),
    Case(
        "limit-file",
        {"hosts": LIMIT_INI, "limits.txt": "web1\n\ndb[0]\n!p1\nstaging\n"},
        ("@limits.txt", "@limits.txt,solo"),
    ),
    Case(
        "address-like-limits",
        {"hosts": "[web]\nweb[1:3]\nweb:22\n"},
        ("web[1:3]", "web[0:1]", "web"),
    ),
    Case(
        "unknown-patterns",
        {"hosts": LIMIT_INI},
        ("nosuch", "web:nosuch"),
        deliberate={"nosuch": "unknown-pattern", "web:nosuch": "unknown-pattern"},
    ),
    Case("empty-inventory", {"hosts.yml": ""}, ("all",)),
]


class Ansible:
    """ansible-core's own answers for one inventory (what ansible and ansible-inventory print)."""

    def __init__(self, path: Path) -> None:
        self._loader = DataLoader()
        self._path = path

    def select(self, limit: str) -> list[str]:
        """``ansible -i INV all --list-hosts --limit LIMIT``."""
        inventory = InventoryManager(loader=self._loader, sources=[str(self._path)])
        inventory.subset(limit)
        return [host.name for host in inventory.get_hosts("all")]

    def variables(self) -> dict[str, dict[str, Any]]:
        """Each host's variables as ``ansible-inventory --list`` gives them, those nodeload reads."""
        inventory = InventoryManager(loader=self._loader, sources=[str(self._path)])
        manager = VariableManager(loader=self._loader, inventory=inventory)
        found = {}
        for host in inventory.get_hosts("all"):
            values = manager.get_vars(host=host, include_hostvars=False)
            found[host.name] = {k: _plain(v) for k, v in values.items() if k in _USED_VARS}
        return found


def _plain(value: Any) -> Any:
    """Ansible's tagged strings as plain ones, for comparison."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.fixture()
def inventory_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Cases run from their own directory: Ansible (and so nodeload) read group_vars/ there too."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield tmp_path


def _write(directory: Path, case: Case) -> Path:
    for name, text in case.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory / next(iter(case.files))


def _ours(path: Path, limit: str) -> list[str] | str:
    try:
        return [node.name for node in load_inventory(path).select(limit=limit)]
    except NodeSourceError as exc:
        return f"error: {exc}"


def _theirs(ansible: Ansible, limit: str) -> list[str] | str:
    try:
        return ansible.select(limit)
    except AnsibleError as exc:
        return f"error: {exc}"


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert sum(len(case.limits) for case in CORPUS) >= 90


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_selection_and_order_match_ansible(inventory_dir: Path, case: Case) -> None:
    path = _write(inventory_dir, case)
    ansible = Ansible(path)
    for limit in case.limits:
        ours, theirs = _ours(path, limit), _theirs(ansible, limit)
        why = case.deliberate.get(limit)
        if why is not None:
            assert isinstance(ours, str) and ours.startswith("error"), (limit, DELIBERATE[why], ours)
            continue
        if isinstance(theirs, list) and not theirs:
            # An empty selection: Ansible would do nothing, nodeload says why and stops.
            assert isinstance(ours, str) and ours.startswith("error"), (limit, ours)
            continue
        if isinstance(theirs, str):
            assert isinstance(ours, str), (limit, theirs, ours)
            continue
        assert ours == theirs, f"--limit {limit!r}: nodeload {ours}, Ansible {theirs}"


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_host_variables_match_ansible(inventory_dir: Path, case: Case) -> None:
    path = _write(inventory_dir, case)
    theirs = Ansible(path).variables()
    ours = load_inventory(path)
    assert ours.hosts() == list(theirs), "the order of group all"
    for host, values in theirs.items():
        mine = {k: _plain(v) for k, v in ours._variables(host).items()}
        assert mine == values, f"host {host}: nodeload {mine}, Ansible {values}"


@pytest.mark.skipif(ansible_tools() is None, reason="ansible-core's commands are not installed")
@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if c.name in ("groups-ini", "yaml-full", "host-vars", "subscripts", "limit-file")],
)
def test_through_ansible_commands_the_same_nodes(inventory_dir: Path, case: Case) -> None:
    """Where Ansible is installed nodeload reads through its commands: the same NodeSpecs."""
    path = _write(inventory_dir, case)
    tools = ansible_tools()
    assert tools is not None
    for limit in case.limits:
        theirs = select_with_ansible(path, tools, limit=limit)
        assert theirs == load_inventory(path).select(limit=limit), limit


def test_a_plugin_inventory_without_ansible_says_to_install_it(inventory_dir: Path) -> None:
    path = inventory_dir / "aws_ec2.yml"
    path.write_text("plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n")
    with pytest.raises(NodeSourceError, match=r"install ansible-core \(pip install ansible-core\)"):
        load_inventory(path).select(all_nodes=True)


def test_an_inventory_directory_works_through_ansible(inventory_dir: Path) -> None:
    """What only Ansible reads (here a directory of inventories) is read through it."""
    tools = ansible_tools()
    if tools is None:
        pytest.skip("ansible-core's commands are not installed")
    (inventory_dir / "inv").mkdir()
    (inventory_dir / "inv" / "a.ini").write_text("[web]\nw1 ansible_host=192.0.2.1\n")
    (inventory_dir / "inv" / "b.yml").write_text("all:\n  hosts:\n    d1: {ansible_user: deploy}\n")
    nodes = select_with_ansible(inventory_dir / "inv", tools, all_nodes=True)
    assert {(n.name, n.address, n.user) for n in nodes} == {("w1", "192.0.2.1", None), ("d1", "d1", "deploy")}
    with pytest.raises(NodeSourceError, match="install ansible-core"):
        load_inventory(inventory_dir / "inv")


def test_ansible_unknown_pattern_is_an_error_through_its_commands(inventory_dir: Path) -> None:
    tools = ansible_tools()
    if tools is None:
        pytest.skip("ansible-core's commands are not installed")
    path = _write(inventory_dir, CORPUS[1])
    with pytest.raises(NodeSourceError, match="nosuch"):
        select_with_ansible(path, tools, limit="web:nosuch")
    assert os.path.exists(path)
