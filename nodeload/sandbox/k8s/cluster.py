"""``Cluster``: a real Kubernetes on this machine, for tests that need kubelet and an API server.

* The control plane runs on the host as plain processes: etcd (Debian's ``etcd-server``) on
  127.0.0.1, kube-apiserver bound only to the host side of a ``docker network create
  --internal`` bridge, kube-controller-manager and kube-scheduler serving nothing at all.
* Each node is a sandbox node container on that network running kubelet (see
  :mod:`nodeload.sandbox.k8s.node`), reachable from this machine over SSH at its InternalIP
  (the ssh_config also names it by node name, for ``--address-type Hostname`` and ``name``).
* Nothing leaves the machine: the network is internal (no route out), pods get no default
  route, kubelet's cloud metadata probe is off.

The binaries come from :func:`~nodeload.sandbox.k8s.build.ensure_binaries` (built once, cached).
Every process, container, network and cgroup the cluster makes is recorded in its state file
as it is made, so :meth:`Cluster.stop`, ``nodeload sandbox cluster down`` and the sweep of a
crashed session's leftovers (:func:`sweep_clusters`) remove exactly those.

Example:
    >>> with Cluster(nodes=2) as cluster:
    ...     subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker
import docker.errors
import requests
import yaml

from nodeload.sandbox.k8s import pki
from nodeload.sandbox.k8s.build import Binaries, ensure_binaries
from nodeload.sandbox.k8s.node import (
    CONFIG_DIR,
    CONTAINERD_SOCKET,
    KUBELET_SYSCTLS,
    PAUSE_IMAGE,
    KubeNode,
    ensure_kube_node_image,
)
from nodeload.sandbox.k8s.processes import HostProcess, spawn, stop
from nodeload.sandbox.node import OWNER_HOST_LABEL, OWNER_PID_LABEL, SANDBOX_LABEL, new_session_id
from nodeload.sandbox.node_image import SandboxError, cache_dir, docker_client
from nodeload.sandbox.sandbox import _owner_alive, _write_key_pair

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.{index}.0/24"
ADMIN_USER = "nodeload-admin"
STATE_FILE = "state.json"
# What tests ask the API server about: who exec'd where, and the lists the node source makes.
_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "resources": [{"group": "", "resources": ["pods/exec", "pods/log", "pods/portforward"]}],
        },
        {
            "level": "Metadata",
            "verbs": ["list"],
            "resources": [{"group": "", "resources": ["nodes", "pods"]}],
        },
        {"level": "None"},
    ],
}


def clusters_dir() -> Path:
    """Where clusters keep their state (``~/.cache/nodeload/clusters/NAME``)."""
    return cache_dir() / "clusters"


class Cluster:
    """A Kubernetes cluster of ``nodes`` kubelet nodes, its control plane on this machine.

    After :meth:`start`: :attr:`kubeconfig` (admin: ``system:masters``, client certificate),
    :meth:`user_kubeconfig` (a token user with no rights until a test grants some),
    :attr:`node_names` (``node-1``...), :attr:`nodes` (their containers), and the SSH files that
    reach them (:attr:`ssh_config_path`, :attr:`identity_path`, :attr:`known_hosts_path`).
    """

    def __init__(
        self,
        nodes: int = 2,
        *,
        name: str | None = None,
        users: Sequence[str] = ("developer",),
        client: docker.DockerClient | None = None,
        binaries: Binaries | None = None,
        detached: bool = False,
        ready_timeout: float = 180.0,
    ) -> None:
        """Configure (not start) a cluster.

        Args:
            nodes: How many kubelet nodes (``node-1``...).
            name: The cluster's name (its state directory); a fresh one when omitted.
            users: Token users to create, each with a kubeconfig and no permissions.
            client: Docker client; a new one from the environment when omitted.
            binaries: The Kubernetes binaries; :func:`ensure_binaries` when omitted.
            detached: The cluster outlives this process (``nodeload sandbox cluster up``): it is
                a leftover for the next sweep once its etcd has ended, not once this process has.
            ready_timeout: Seconds the control plane and the nodes may take to get ready.
        """
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, not {nodes}")
        self.session = new_session_id()
        self.name = name or f"session-{self.session}"
        self.node_names = [f"node-{i}" for i in range(1, nodes + 1)]
        self.users = list(users)
        self.directory = clusters_dir() / self.name
        self.nodes: list[KubeNode] = []
        self.network: str | None = None
        self.server = ""
        self._client = client
        self._binaries = binaries
        self._detached = detached
        self._ready_timeout = ready_timeout
        self._processes: list[HostProcess] = []
        self._state: dict[str, Any] = {}
        self._lock = threading.RLock()  # the state file is written from the nodes' threads too
        self._ca: pki.CertificateAuthority | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``nodeload-admin`` in ``system:masters``)."""
        return self.directory / "admin.kubeconfig"

    def user_kubeconfig(self, user: str) -> Path:
        """The kubeconfig of token user ``user`` (one of ``users``), who may do nothing at first."""
        if user not in self.users:
            raise KeyError(f"no user {user!r} in this cluster (users: {', '.join(self.users)})")
        return self.directory / "users" / f"{user}.kubeconfig"

    @property
    def identity_path(self) -> Path:
        """The SSH key every node authorizes for root."""
        return self.directory / "ssh" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """known_hosts with every node's host key under its InternalIP."""
        return self.directory / "ssh" / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        """ssh_config reaching each node by InternalIP and by node name, as root."""
        return self.directory / "ssh" / "ssh_config"

    def node(self, name: str) -> KubeNode:
        """The container of node ``name``."""
        return self.nodes[self.node_names.index(name)]

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Build or reuse the binaries and images, start the control plane and the nodes, and
        wait until every node is Ready.

        Raises:
            SandboxError: Something could not be built or started (the message carries the
                failing component's log).
            TimeoutError: The API server or a node did not get ready in time.
        """
        started = time.monotonic()
        binaries = self._binaries or ensure_binaries()
        client = self._docker()
        image = ensure_kube_node_image(binaries, client)
        self.directory.mkdir(parents=True, exist_ok=False)
        self.directory.chmod(0o700)
        self._state = {"name": self.name, "owner_pid": os.getpid(), "host": socket.gethostname()}
        self._save()
        (self.directory / "ssh").mkdir(mode=0o700)
        public_key = _write_key_pair(self.identity_path)
        gateway = self._create_network()
        ca = self._ca = pki.CertificateAuthority()
        self._write_pki(ca, gateway)
        (self.directory / "logs").mkdir()
        etcd_url = self._start_etcd()
        with ThreadPoolExecutor(max_workers=len(self.node_names)) as pool:
            # The node containers start while the control plane does: both take seconds.
            starting = [pool.submit(self._start_node, image, name, public_key) for name in self.node_names]
            self._start_control_plane(binaries, gateway, etcd_url)
            self.nodes = [future.result() for future in starting]
        self._write_ssh_files()
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            for future in [pool.submit(self._start_kubelet, ca, i, n) for i, n in enumerate(self.nodes)]:
                future.result()
        self._wait("every node Ready", self._nodes_ready, self._node_failure)
        self._wait("the default service account", self._default_service_account, self._control_plane_failure)
        log.info("cluster %s ready in %.1f s", self.name, time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Remove the nodes, stop the control plane, remove the network, the pods' cgroups and
        the state directory."""
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep cleaning up the rest
                log.warning("removing node container failed: %s", exc)
        self.nodes = []
        if self._state:  # else nothing was made (e.g. the name was taken): nothing to remove
            teardown(self.directory, self._docker(), self._processes)
        self._state, self._processes = {}, []
        self.network = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users and what the API server saw ----------------------------------------------------

    def add_user(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a new user ``user`` in ``groups``, authenticated by a client
        certificate of the cluster's CA; the user may do nothing until granted.

        Raises:
            RuntimeError: The cluster was not started by this process (its CA key is not here).
        """
        if self._ca is None:
            raise RuntimeError("add_user needs a cluster this process started")
        path = self.directory / "users" / f"{user}.kubeconfig"
        cert = self._ca.client(user, groups)
        return pki.write_kubeconfig(path, pki.kubeconfig(self.server, self._ca.cert_pem, user, cert=cert))

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit events so far: every pods/exec, pods/log and pods/portforward,
        and every list of nodes or pods (who asked, the request URI, the answer's code)."""
        path = self.directory / "logs" / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- API clients -------------------------------------------------------------------------

    def api(self, user: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (default) or token user ``user``."""
        from kubernetes import config

        path = self.kubeconfig if user is None else self.user_kubeconfig(user)
        return config.new_client_from_config(str(path))  # type: ignore[no-untyped-call]

    # -- pieces ------------------------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def _save(self) -> None:
        with self._lock:
            partial = self.directory / f"{STATE_FILE}.partial"
            partial.write_text(json.dumps(self._state, indent=2))
            partial.replace(self.directory / STATE_FILE)

    def _labels(self) -> dict[str, str]:
        return {
            SANDBOX_LABEL: self.session,
            OWNER_PID_LABEL: str(self._state["owner_pid"]),
            OWNER_HOST_LABEL: socket.gethostname(),
        }

    def _create_network(self) -> str:
        name = f"nodeload-k8s-{self.session}"
        network = self._docker().networks.create(name, driver="bridge", internal=True, labels=self._labels())
        self.network = name
        self._state["network"] = name
        self._save()
        network.reload()
        configs = network.attrs.get("IPAM", {}).get("Config") or []
        gateway = next((c.get("Gateway") for c in configs if c.get("Gateway")), None)
        if not gateway:
            raise SandboxError(f"network {name} has no gateway address for the API server to bind to")
        return str(gateway)

    def _write_pki(self, ca: pki.CertificateAuthority, gateway: str) -> None:
        directory = self.directory / "pki"
        directory.mkdir(mode=0o700)
        (directory / "ca.crt").write_bytes(ca.cert_pem)
        hosts = [gateway, SERVICE_IP, "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        ca.server("kube-apiserver", [*hosts, "kubernetes.default.svc.cluster.local"]).write(
            directory, "apiserver"
        )
        ca.client("kube-apiserver-kubelet-client", ["system:masters"]).write(
            directory, "apiserver-kubelet-client"
        )
        sa_key, sa_pub = pki.service_account_keys()
        pki.KeyPair(sa_pub, sa_key).write(directory, "sa")
        self.server = f"https://{gateway}:{_free_port(gateway)}"
        admin = ca.client(ADMIN_USER, ["system:masters"])
        admin.write(directory, "admin")
        pki.write_kubeconfig(
            self.kubeconfig, pki.kubeconfig(self.server, ca.cert_pem, ADMIN_USER, cert=admin)
        )
        for component in ("kube-controller-manager", "kube-scheduler"):
            cert = ca.client(f"system:{component}")
            config = pki.kubeconfig(self.server, ca.cert_pem, f"system:{component}", cert=cert)
            pki.write_kubeconfig(directory / f"{component}.kubeconfig", config)
        (self.directory / "users").mkdir(mode=0o700)
        rows = []
        for user in self.users:
            token = secrets.token_urlsafe(32)
            rows.append(f"{token},{user},{user},")
            config = pki.kubeconfig(self.server, ca.cert_pem, user, token=token)
            pki.write_kubeconfig(self.user_kubeconfig(user), config)
        (directory / "tokens.csv").write_text("".join(f"{row}\n" for row in rows))

    def _start_etcd(self) -> str:
        client_port, peer_port = _free_port("127.0.0.1"), _free_port("127.0.0.1")
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                "etcd", "--name=sandbox", f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sandbox={peer_url}", "--initial-cluster-state=new",
                "--logger=zap", "--log-level=warn",
            ],
        )  # fmt: skip
        if self._detached:  # a cluster left running by a command line lives as long as its etcd
            self._state["owner_pid"] = self._processes[-1].pid
            self._save()
        return etcd_url

    def _start_control_plane(self, binaries: Binaries, gateway: str, etcd_url: str) -> None:
        pki_dir = self.directory / "pki"
        self._wait("etcd", lambda: _etcd_healthy(etcd_url), self._control_plane_failure, timeout=30)
        port = self.server.rpartition(":")[2]
        self._spawn(
            "kube-apiserver",
            [
                str(binaries.path("kube-apiserver")),
                f"--advertise-address={gateway}", f"--bind-address={gateway}", f"--secure-port={port}",
                "--insecure-port=0", f"--etcd-servers={etcd_url}",
                f"--cert-dir={self.directory / 'apiserver'}",
                f"--client-ca-file={pki_dir / 'ca.crt'}",
                f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
                f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-key-file={pki_dir / 'sa.crt'}",
                f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                f"--token-auth-file={pki_dir / 'tokens.csv'}",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.directory / 'logs' / 'audit.log'}",
                "--audit-log-format=json",
                "--allow-privileged=true", "--profiling=false", "--v=1",
            ],
        )  # fmt: skip
        # The controllers give up (klog.Fatal) when the API server is not healthy within seconds
        # of their start: on a loaded machine it may take longer to come up.
        self._wait(f"API server {self.server}", self._api_ready, self._control_plane_failure)
        for component in ("kube-controller-manager", "kube-scheduler"):
            argv = [
                str(binaries.path(component)),
                f"--kubeconfig={pki_dir / f'{component}.kubeconfig'}",
                "--port=0", "--secure-port=0", "--leader-elect=false", "--v=1",
            ]  # fmt: skip
            if component == "kube-controller-manager":
                argv += [
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                    f"--root-ca-file={pki_dir / 'ca.crt'}",
                ]
            self._spawn(component, argv)

    def _audit_policy(self) -> Path:
        path = self.directory / "pki" / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(_AUDIT_POLICY, sort_keys=False))
        return path

    def _spawn(self, name: str, argv: list[str]) -> None:
        process = spawn(name, argv, self.directory / "logs" / f"{name}.log")
        with self._lock:
            self._processes.append(process)
            self._state.setdefault("processes", []).append(process.to_json())
            self._save()

    def _start_node(self, image: str, name: str, public_key: str) -> KubeNode:
        assert self.network is not None
        node = KubeNode(
            image,
            name=name,
            container_name=f"nodeload-k8s-{self.session}-{name}",
            network=self.network,
            session=self.session,
        )
        node.owner_pid = int(self._state["owner_pid"])
        node.with_authorized_key(public_key)
        try:
            node.start()
        finally:
            with self._lock:  # the nodes start in parallel
                if node.volume:
                    self._state.setdefault("volumes", []).append(node.volume)
                with contextlib.suppress(Exception):
                    self._state.setdefault("containers", []).append(node.get_wrapped_container().id)
                self._save()
        return node

    def _start_kubelet(self, ca: pki.CertificateAuthority, index: int, node: KubeNode) -> None:
        ip = node.ip
        cgroup_root = f"nodeload-{self.session}-{node.node_name}"
        with self._lock:
            self._state.setdefault("cgroup_roots", []).append(cgroup_root)
            self._save()
        client = ca.client(f"system:node:{node.node_name}", ["system:nodes"])
        serving = ca.server(node.node_name, [ip, node.node_name])
        kubeconfig = pki.kubeconfig(self.server, ca.cert_pem, f"system:node:{node.node_name}", cert=client)
        files: dict[str, tuple[bytes, int]] = {
            f"{CONFIG_DIR}/ca.crt": (ca.cert_pem, 0o644),
            f"{CONFIG_DIR}/kubelet.crt": (serving.cert, 0o644),
            f"{CONFIG_DIR}/kubelet.key": (serving.key, 0o600),
            f"{CONFIG_DIR}/kubelet.kubeconfig": (yaml.safe_dump(kubeconfig).encode(), 0o600),
            f"{CONFIG_DIR}/kubelet.yaml": (_kubelet_config(ip, cgroup_root).encode(), 0o644),
            "/etc/cni/net.d/10-nodeload.conflist": (
                _cni_config(POD_CIDR.format(index=index)).encode(),
                0o644,
            ),
        }
        for key, value in KUBELET_SYSCTLS.items():
            files[f"{CONFIG_DIR}/sysctl/{key}"] = (f"{value}\n".encode(), 0o644)
        node.put_files(files)
        node.start_kubelet(
            cgroup_root,
            [
                f"--config={CONFIG_DIR}/kubelet.yaml", f"--kubeconfig={CONFIG_DIR}/kubelet.kubeconfig",
                "--container-runtime=remote", f"--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}",
                f"--hostname-override={node.node_name}", f"--node-ip={ip}",
                f"--pod-infra-container-image={PAUSE_IMAGE}", "--v=1",
            ],
        )  # fmt: skip

    def _write_ssh_files(self) -> None:
        known, entries = [], []
        for node in self.nodes:
            ip = node.ip
            known.append(f"{ip} {node.host_public_key()}\n")
            entries.append(
                f"Host {node.node_name} {ip}\n"
                f"    HostName {ip}\n"
                "    User root\n"
                f"    IdentityFile {self.identity_path}\n"
                "    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.known_hosts_path}\n"
                "    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n"
                "    LogLevel ERROR\n"
            )
        self.known_hosts_path.write_text("".join(known))
        self.ssh_config_path.write_text("\n".join(entries))

    # -- waiting -----------------------------------------------------------------------------

    def _wait(
        self,
        what: str,
        ready: Callable[[], bool],
        failure: Callable[[], str | None],
        timeout: float | None = None,
    ) -> None:
        deadline = time.monotonic() + (timeout or self._ready_timeout)
        while not ready():
            why = failure()
            if why:
                raise SandboxError(f"waiting for {what}: {why}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what} not ready after {timeout or self._ready_timeout:.0f}s{self._diagnosis()}"
                )
            time.sleep(0.3)

    def _control_plane_failure(self) -> str | None:
        for process in self._processes:
            if not process.alive():
                return f"{process.name} exited; its log ends:\n{process.log_tail()}"
        return None

    def _node_failure(self) -> str | None:
        why = self._control_plane_failure()
        if why:
            return why
        for node in self.nodes:
            if node.exec(["pgrep", "-x", "kubelet"]).exit_code != 0:
                return f"kubelet exited on {node.node_name}; its log ends:\n{node.kubelet_log()}"
        return None

    def _diagnosis(self) -> str:
        parts = [f"\n--- {p.name} ---\n{p.log_tail(1500)}" for p in self._processes]
        parts += [f"\n--- kubelet on {n.node_name} ---\n{n.kubelet_log(1500)}" for n in self.nodes]
        return "".join(parts)

    def _get(self, path: str) -> requests.Response:
        pki_dir = self.directory / "pki"
        cert = (str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return requests.get(f"{self.server}{path}", cert=cert, verify=str(pki_dir / "ca.crt"), timeout=5)

    def _api_ready(self) -> bool:
        try:
            return self._get("/readyz").status_code == 200
        except requests.RequestException:
            return False

    def _nodes_ready(self) -> bool:
        try:
            items = self._get("/api/v1/nodes").json().get("items", [])
        except (requests.RequestException, ValueError):
            return False
        ready = {
            item["metadata"]["name"]
            for item in items
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in item["status"].get("conditions", [])
            )
        }
        return ready >= set(self.node_names)

    def _default_service_account(self) -> bool:
        try:
            return self._get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
        except requests.RequestException:
            return False


# -- teardown and sweeping ---------------------------------------------------------------------


def teardown(directory: Path, client: docker.DockerClient, processes: Sequence[HostProcess] = ()) -> None:
    """Remove what the state file in ``directory`` records (and ``processes``), then the directory."""
    state = _read_state(directory)
    for container_id in state.get("containers", []):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(container_id).remove(force=True, v=True)
    for volume in state.get("volumes", []):
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)
    recorded = [HostProcess.from_json(p) for p in state.get("processes", [])]
    live = {p.pid: p for p in processes}
    for process in reversed([live.get(p.pid, p) for p in recorded] or list(processes)):
        stop(process)
    if state.get("network"):
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(state["network"]).remove()
    for root in state.get("cgroup_roots", []):
        _remove_cgroups(root)
    shutil.rmtree(directory, ignore_errors=True)


def sweep_clusters(client: docker.DockerClient | None = None) -> int:
    """Tear down the clusters whose owner process has ended (crashed test sessions).

    Returns:
        How many were torn down.
    """
    root = clusters_dir()
    if not root.is_dir():
        return 0
    swept = 0
    for directory in sorted(root.iterdir()):
        state = _read_state(directory)
        labels = {
            OWNER_PID_LABEL: str(state.get("owner_pid", "")),
            OWNER_HOST_LABEL: str(state.get("host", "")),
        }
        if state and _owner_alive(labels):
            continue
        if not state and time.time() - directory.stat().st_mtime < 60:
            continue  # being created right now
        log.info("removing the leftovers of cluster %s", directory.name)
        teardown(directory, client or docker_client())
        swept += 1
    return swept


def find_cluster(name: str) -> Path:
    """The state directory of cluster ``name``.

    Raises:
        SandboxError: There is no such cluster.
    """
    directory = clusters_dir() / name
    if not (directory / STATE_FILE).is_file():
        known = sorted(p.name for p in clusters_dir().glob("*") if (p / STATE_FILE).is_file())
        raise SandboxError(f"no sandbox cluster {name!r} (running: {', '.join(known) or 'none'})")
    return directory


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _remove_cgroups(root: str) -> None:
    """Remove the (now empty) cgroups kubelet made for its pods under ``root``, deepest first."""
    top = Path("/sys/fs/cgroup")
    hierarchies = [top] if (top / "cgroup.controllers").exists() else [p for p in top.iterdir() if p.is_dir()]
    for hierarchy in hierarchies:
        base = hierarchy / root
        if not base.is_dir():
            continue
        for attempt in range(50):  # the pods' processes may take a moment to be gone
            left = sorted(
                (p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            )
            try:
                for cgroup in [*left, base]:
                    cgroup.rmdir()
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                if attempt == 49:
                    log.warning("cannot remove cgroup %s: %s", base, exc)
                time.sleep(0.1)


def _kubelet_config(ip: str, cgroup_root: str) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzPort": 0,
        # Only the CA's certificates get in: the API server's kubelet client (exec, logs).
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": f"{CONFIG_DIR}/ca.crt"},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "tlsCertFile": f"{CONFIG_DIR}/kubelet.crt",
        "tlsPrivateKeyFile": f"{CONFIG_DIR}/kubelet.key",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "failSwapOn": False,
        # The test nodes share this machine's disk: never collect pushed images, never evict.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%"},
        "serializeImagePulls": False,
    }
    return json.dumps(config, indent=2)


def _cni_config(subnet: str) -> str:
    # No gateway and no routes: a pod reaches nothing but its own node's bridge.
    bridge = {
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": False,
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": []},
    }
    return json.dumps({"cniVersion": "0.4.0", "name": "nodeload", "plugins": [bridge]}, indent=2)


def _etcd_healthy(url: str) -> bool:
    try:
        return bool(requests.get(f"{url}/health", timeout=2).json().get("health") == "true")
    except (requests.RequestException, ValueError):
        return False


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def iter_clusters() -> Iterator[Path]:
    """The state directories of the clusters on this machine."""
    if clusters_dir().is_dir():
        yield from (p for p in sorted(clusters_dir().iterdir()) if (p / STATE_FILE).is_file())
