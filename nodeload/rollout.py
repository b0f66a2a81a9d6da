"""``push --restart``: the pods that still run an older image of a tag just pushed, and the
restart of their workloads as ``kubectl rollout restart`` does it.

A pushed tag moves on the nodes, but running containers keep the image they started from. A
pod is stale when one of its containers was started from the name just pushed to its node,
under another image ID than the node now holds. Its owner is restarted the way kubectl does
(the pod template's ``kubectl.kubernetes.io/restartedAt`` annotation), so the workload's own
controller replaces its pods by its own rules (surge, PodDisruptionBudgets, readiness).
Deployments (through their ReplicaSet), StatefulSets and DaemonSets are restarted; a bare pod
or a Job's pod is listed and left alone: deleting it would lose it or rerun the job.

The planning here (:func:`stale_pods`, :func:`plan_restarts`, :func:`rolled_out`) is pure;
:func:`restart` does the API calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nodeload.errors import UsageError
from nodeload.jsondoc import array, mapping
from nodeload.reference import normalize

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # the annotation kubectl rollout restart sets
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")
DEFAULT_TIMEOUT = 300.0
_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Pushed:
    """What a push left on a node: ``name`` now means the image ``image_id`` (config digest),
    whose manifest is ``digest``."""

    node: str
    name: str
    image_id: str
    digest: str

    def is_current(self, reported: str) -> bool:
        """Whether a container status's ``imageID`` is this image (CRI reports the config digest,
        or ``repo@manifest-digest`` for an image pulled from a registry)."""
        return reported in (self.image_id, self.digest) or reported.endswith(f"@{self.digest}")


@dataclass(frozen=True)
class StalePod:
    """A running pod with a container started from an older image of a pushed name."""

    namespace: str
    name: str
    node: str
    container: str
    image: str
    image_id: str  # what it runs
    pushed_id: str  # what its node now holds under that name
    owner_kind: str  # its controller's kind ("" for a bare pod)
    owner_name: str

    @property
    def label(self) -> str:
        return f"pod {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Workload:
    """A workload to restart: ``kind`` is one of :data:`RESTARTABLE`."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()} {self.namespace}/{self.name}"


@dataclass
class Restarted:
    """One workload restarted, and how its rollout went."""

    kind: str
    namespace: str
    name: str
    pods: list[str]  # its stale pods, by name
    rolled_out: bool = False
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Untouched:
    """A stale pod nodeload leaves alone, and why."""

    namespace: str
    name: str
    node: str
    owner: str  # "Job/migrate", or "" for a bare pod
    why: str


@dataclass
class RestartReport:
    """What ``--restart`` did: the JSON report's ``restart`` object."""

    restarted: list[Restarted] = field(default_factory=list)
    untouched: list[Untouched] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every restart asked for rolled out."""
        return self.error is None and all(r.rolled_out for r in self.restarted)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pushed_images(results: Iterable[Any]) -> list[Pushed]:
    """What the successful results of a push left on their nodes (``NodeResult``s)."""
    return [
        Pushed(r.node, normalize(r.name), r.image_id, r.digest)
        for r in results
        if r.ok and r.name and r.image_id and r.namespace == "k8s.io"  # only what kubelet sees
    ]


def stale_pods(pods: Iterable[Mapping[str, Any]], pushed: Sequence[Pushed]) -> list[StalePod]:
    """The running pods (Kubernetes Pod objects as JSON) with a container started from a name
    in ``pushed`` for the pod's node, under another image ID."""
    by_node_name = {(p.node, p.name): p for p in pushed}
    stale: list[StalePod] = []
    for pod in pods:
        meta, spec, status = (mapping(pod.get(k)) for k in ("metadata", "spec", "status"))
        if status.get("phase") not in ("Running", "Pending"):
            continue  # finished pods run nothing
        node = str(spec.get("nodeName") or "")
        statuses = [*array(status.get("containerStatuses")), *array(status.get("initContainerStatuses"))]
        for container in statuses:
            image, running = str(container.get("image") or ""), str(container.get("imageID") or "")
            try:
                name = normalize(image)
            except UsageError:
                continue  # not a reference nodeload could have pushed
            now = by_node_name.get((node, name))
            if now is None or not running or now.is_current(running):
                continue
            owner = _controller(meta)
            stale.append(
                StalePod(
                    namespace=str(meta.get("namespace") or "default"),
                    name=str(meta.get("name") or ""),
                    node=node,
                    container=str(container.get("name") or ""),
                    image=image,
                    image_id=running,
                    pushed_id=now.image_id,
                    owner_kind=str(owner.get("kind") or ""),
                    owner_name=str(owner.get("name") or ""),
                )
            )
            break  # one stale container is enough to restart the pod
    return stale


def plan_restarts(
    stale: Sequence[StalePod], deployment_of: Mapping[tuple[str, str], str | None]
) -> tuple[dict[Workload, list[StalePod]], list[Untouched]]:
    """The workloads to restart (each with its stale pods) and the pods left alone.

    ``deployment_of`` maps a ReplicaSet (namespace, name) to its Deployment's name (None: a
    ReplicaSet of its own, whose pods a restart would not replace).
    """
    workloads: dict[Workload, list[StalePod]] = {}
    untouched: list[Untouched] = []
    for pod in stale:
        kind, name = pod.owner_kind, pod.owner_name
        if kind == "ReplicaSet":
            deployment = deployment_of.get((pod.namespace, name))
            if deployment is None:
                untouched.append(_untouched(pod, "its ReplicaSet belongs to no Deployment"))
                continue
            kind, name = "Deployment", deployment
        if kind not in RESTARTABLE:
            why = "a bare pod: restarting it would delete it" if not kind else f"owned by a {kind}"
            untouched.append(_untouched(pod, why + "; delete it yourself to run the new image"))
            continue
        workloads.setdefault(Workload(kind, pod.namespace, name), []).append(pod)
    return workloads, untouched


def restart_patch(workload: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The JSON patch that restarts ``workload`` as kubectl does: the pod template's
    ``restartedAt`` annotation set to ``now``."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    template = mapping(mapping(workload.get("spec")).get("template"))
    annotations = mapping(template.get("metadata")).get("annotations")
    if not isinstance(annotations, Mapping):
        return [{"op": "add", "path": "/spec/template/metadata/annotations", "value": {RESTARTED_AT: stamp}}]
    return [
        {"op": "add", "path": "/spec/template/metadata/annotations/" + _pointer(RESTARTED_AT), "value": stamp}
    ]


def rolled_out(kind: str, workload: Mapping[str, Any], generation: int) -> tuple[bool, str]:
    """Whether the rollout of ``workload`` to at least ``generation`` is complete (kubectl's
    ``rollout status`` rules), and where it stands, for a person."""
    spec, status = mapping(workload.get("spec")), mapping(workload.get("status"))
    if int(status.get("observedGeneration") or 0) < generation:
        return False, "waiting for its controller to see the restart"
    if kind == "Deployment":
        wanted = int(spec.get("replicas", 1) or 0)
        updated = int(status.get("updatedReplicas") or 0)
        total, available = int(status.get("replicas") or 0), int(status.get("availableReplicas") or 0)
        done = updated >= wanted and total <= updated and available >= updated
        return done, f"{updated} of {wanted} updated, {available} available, {total - updated} old left"
    if kind == "DaemonSet":
        wanted = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
        return (
            updated >= wanted and available >= wanted,
            f"{updated} of {wanted} updated, {available} available",
        )
    wanted = int(spec.get("replicas", 1) or 0)  # StatefulSet
    updated, ready = int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0)
    same = status.get("updateRevision") == status.get("currentRevision")
    return updated >= wanted and ready >= wanted and same, f"{updated} of {wanted} updated, {ready} ready"


# -- the API calls ---------------------------------------------------------------------------


class Cluster:
    """The few Kubernetes API calls a restart makes, as plain JSON (the generated models insist
    on fields a sparse object may lack)."""

    def __init__(self, configuration: Any, timeout: float = 15.0) -> None:
        """Calls through a client of ``configuration`` (kubernetes.client.Configuration)."""
        from kubernetes import client as kube_client  # slow to import: only when restarting

        self._client = kube_client
        self._api = kube_client.ApiClient(configuration)
        self._core = kube_client.CoreV1Api(self._api)
        self._apps = kube_client.AppsV1Api(self._api)
        self._timeout = (timeout, timeout)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def pods_on(self, node: str) -> list[Mapping[str, Any]]:
        body = self._json(self._core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
        return [p for p in array(body.get("items")) if isinstance(p, Mapping)]

    def deployment_of(self, namespace: str, replica_set: str) -> str | None:
        found = self._json(self._apps.read_namespaced_replica_set, replica_set, namespace)
        owner = _controller(mapping(found.get("metadata")))
        return str(owner["name"]) if owner.get("kind") == "Deployment" else None

    def read(self, workload: Workload) -> Mapping[str, Any]:
        return self._json(self._call("read", workload.kind), workload.name, workload.namespace)

    def patch(self, workload: Workload, patch: list[dict[str, Any]]) -> Mapping[str, Any]:
        return self._json(self._call("patch", workload.kind), workload.name, workload.namespace, patch)

    def _call(self, verb: str, kind: str) -> Callable[..., Any]:
        snake = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[kind]
        method: Callable[..., Any] = getattr(self._apps, f"{verb}_namespaced_{snake}")
        return method

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Mapping[str, Any]:
        response = call(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        body = json.loads(response.data)
        return body if isinstance(body, Mapping) else {}


def restart(
    cluster: Cluster,
    pushed: Sequence[Pushed],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    say: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> RestartReport:
    """Restart the workloads of the pods on the pushed nodes that run an older image of a pushed
    name, and wait (up to ``timeout`` seconds in all) for their rollouts."""
    from kubernetes.client import ApiException
    from urllib3.exceptions import HTTPError

    report = RestartReport()
    doing = "listing the pods on the pushed nodes"
    try:
        pods = [pod for node in sorted({p.node for p in pushed}) for pod in cluster.pods_on(node)]
        stale = stale_pods(pods, pushed)
        doing = "reading the ReplicaSets of those pods"
        sets = {(p.namespace, p.owner_name) for p in stale if p.owner_kind == "ReplicaSet"}
        deployment_of = {key: cluster.deployment_of(*key) for key in sorted(sets)}
        workloads, report.untouched = plan_restarts(stale, deployment_of)
        for pod in report.untouched:
            say(f"not restarting pod {pod.namespace}/{pod.name} on {pod.node}: {pod.why}")
        if not workloads:
            say("no pod on the pushed nodes runs an older image of what was pushed: nothing to restart")
            return report
        generations: dict[Workload, int] = {}
        for workload, its_pods in workloads.items():
            doing = f"restarting {workload}"
            current = cluster.read(workload)
            patched = cluster.patch(workload, restart_patch(current, datetime.now(UTC)))
            generations[workload] = int(mapping(patched.get("metadata")).get("generation") or 0)
            report.restarted.append(
                Restarted(workload.kind, workload.namespace, workload.name, [p.name for p in its_pods])
            )
            ran = ", ".join(sorted({p.image_id.split("@")[-1][:19] for p in its_pods}))
            say(f"restarting {workload}: {len(its_pods)} pod(s) ran {ran}")
        doing = "waiting for the rollouts"
        _wait(cluster, workloads, generations, report, timeout, say, clock)
    except ApiException as err:
        report.error = _api_problem(err, doing)
    except HTTPError as err:
        report.error = f"{doing}: cannot reach the Kubernetes API server: {err}"
    return report


def _wait(
    cluster: Cluster,
    workloads: Mapping[Workload, list[StalePod]],
    generations: Mapping[Workload, int],
    report: RestartReport,
    timeout: float,
    say: Callable[[str], None],
    clock: Callable[[], float],
) -> None:
    started = clock()
    pending = dict(zip(workloads, report.restarted, strict=True))
    last: dict[Workload, str] = {}
    while pending:
        for workload, entry in list(pending.items()):
            done, where = rolled_out(workload.kind, cluster.read(workload), generations[workload])
            if done:
                entry.rolled_out, entry.seconds = True, round(clock() - started, 2)
                say(f"{workload} rolled out in {entry.seconds:.1f} s ({where})")
                del pending[workload]
            elif last.get(workload) != where:
                say(f"{workload}: {where}")
                last[workload] = where
        if not pending:
            return
        if clock() - started > timeout:
            for workload, entry in pending.items():
                entry.error = f"not rolled out after {timeout:g} s ({last.get(workload, '')})"
            names = ", ".join(str(w) for w in pending)
            report.error = (
                f"{names}: not rolled out within {timeout:g} s; see kubectl rollout status "
                "(the restart stands: its controller goes on)"
            )
            return
        time.sleep(_POLL_SECONDS)


def _api_problem(err: Any, doing: str) -> str:
    from nodeload.nodes.kubernetes import status_message  # the kubernetes client: slow to import

    message = status_message(err)
    if err.status == 403:
        return (
            f"{doing}: forbidden ({message}). --restart needs, in the workloads' namespaces: list "
            "on pods (all namespaces), get on replicasets, and get and patch on deployments, "
            'statefulsets and daemonsets (apps); see the README\'s "Restarting what runs the old image"'
        )
    return f"{doing}: the API server answered {err.status} {message}"


def _untouched(pod: StalePod, why: str) -> Untouched:
    owner = f"{pod.owner_kind}/{pod.owner_name}" if pod.owner_kind else ""
    return Untouched(pod.namespace, pod.name, pod.node, owner, why)


def _controller(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    owners = [o for o in array(meta.get("ownerReferences")) if isinstance(o, Mapping)]
    return next((o for o in owners if o.get("controller")), {})


def _pointer(key: str) -> str:
    """``key`` as a JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
