"""``push --restart``'s planning: which pods are stale, which workloads restart, the patch, and
when a rollout is done (kubectl's rules). The API calls are tested on a real cluster
(tests/cluster/test_restart.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nodeload.rollout import (
    RESTARTED_AT,
    Pushed,
    Workload,
    plan_restarts,
    restart_patch,
    rolled_out,
    stale_pods,
)

NEW = Pushed("node-1", "docker.io/library/app:dev", "sha256:" + "b" * 64, "sha256:" + "c" * 64)
OLD_ID = "sha256:" + "a" * 64


def _pod(
    name: str, image: str, image_id: str, owner: tuple[str, str] | None, node: str = "node-1"
) -> dict[str, Any]:
    owners = [{"kind": owner[0], "name": owner[1], "controller": True}] if owner else []
    return {
        "metadata": {"name": name, "namespace": "ns", "ownerReferences": owners},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "c", "image": image, "imageID": image_id}],
        },
    }


def test_a_pod_is_stale_when_it_runs_another_id_of_the_name_its_node_now_holds() -> None:
    pods = [
        _pod("old", "app:dev", OLD_ID, ("ReplicaSet", "web-1")),  # short name, normalised
        _pod("current", "docker.io/library/app:dev", NEW.image_id, ("ReplicaSet", "web-1")),
        _pod("by-digest", "app:dev", f"docker.io/library/app@{NEW.digest}", None),  # pulled form
        _pod("other-name", "app:other", OLD_ID, None),
        _pod("other-node", "app:dev", OLD_ID, None, node="node-2"),  # nothing pushed there
        _pod("starting", "app:dev", "", None),  # no image yet: nothing to say
    ]
    stale = stale_pods(pods, [NEW])
    assert [(p.name, p.image_id, p.pushed_id) for p in stale] == [("old", OLD_ID, NEW.image_id)]


def test_finished_pods_are_not_stale() -> None:
    done = _pod("done", "app:dev", OLD_ID, ("Job", "migrate"))
    done["status"]["phase"] = "Succeeded"
    assert stale_pods([done], [NEW]) == []


def test_deployments_statefulsets_daemonsets_restart_and_the_rest_is_listed() -> None:
    pods = [
        _pod("web-a", "app:dev", OLD_ID, ("ReplicaSet", "web-1")),
        _pod("web-b", "app:dev", OLD_ID, ("ReplicaSet", "web-1")),
        _pod("db-0", "app:dev", OLD_ID, ("StatefulSet", "db")),
        _pod("agent-x", "app:dev", OLD_ID, ("DaemonSet", "agent")),
        _pod("lonely", "app:dev", OLD_ID, ("ReplicaSet", "lonely-rs")),
        _pod("job-1", "app:dev", OLD_ID, ("Job", "migrate")),
        _pod("bare", "app:dev", OLD_ID, None),
    ]
    workloads, untouched = plan_restarts(
        stale_pods(pods, [NEW]), {("ns", "web-1"): "web", ("ns", "lonely-rs"): None}
    )
    assert {w: [p.name for p in ps] for w, ps in workloads.items()} == {
        Workload("Deployment", "ns", "web"): ["web-a", "web-b"],  # one restart for both
        Workload("StatefulSet", "ns", "db"): ["db-0"],
        Workload("DaemonSet", "ns", "agent"): ["agent-x"],
    }
    assert [(u.name, u.owner) for u in untouched] == [
        ("lonely", "ReplicaSet/lonely-rs"),
        ("job-1", "Job/migrate"),
        ("bare", ""),
    ]
    assert "bare pod" in untouched[2].why and "Job" in untouched[1].why


def test_the_patch_sets_kubectls_annotation_whether_or_not_the_template_has_annotations() -> None:
    now = datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC)
    bare = restart_patch({"spec": {"template": {"metadata": {}}}}, now)
    assert bare == [
        {
            "op": "add",
            "path": "/spec/template/metadata/annotations",
            "value": {RESTARTED_AT: "2026-12-08T01:02:03Z"},
        }
    ]
    annotated = restart_patch({"spec": {"template": {"metadata": {"annotations": {"x": "y"}}}}}, now)
    assert annotated == [
        {
            "op": "add",
            "path": "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
            "value": "2026-12-08T01:02:03Z",
        }
    ]


def test_a_rollout_is_done_by_kubectls_rules() -> None:
    def deployment(observed: int, updated: int, total: int, available: int) -> dict[str, Any]:
        status = {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total}
        return {"spec": {"replicas": 2}, "status": {**status, "availableReplicas": available}}

    assert not rolled_out("Deployment", deployment(1, 2, 2, 2), 2)[0]  # not yet seen
    assert not rolled_out("Deployment", deployment(2, 2, 3, 2), 2)[0]  # an old pod left
    assert not rolled_out("Deployment", deployment(2, 1, 2, 2), 2)[0]
    assert rolled_out("Deployment", deployment(2, 2, 2, 2), 2)[0]
    daemonset = {
        "status": {"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2}
    }
    assert not rolled_out(
        "DaemonSet", {**daemonset, "status": {**daemonset["status"], "numberAvailable": 1}}, 3
    )[0]
    assert rolled_out("DaemonSet", {**daemonset, "status": {**daemonset["status"], "numberAvailable": 2}}, 3)[
        0
    ]
    sts = {
        "observedGeneration": 2,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "currentRevision": "a",
        "updateRevision": "b",
    }
    assert not rolled_out("StatefulSet", {"spec": {"replicas": 1}, "status": sts}, 2)[0]
    sts["currentRevision"] = "b"
    assert rolled_out("StatefulSet", {"spec": {"replicas": 1}, "status": sts}, 2)[0]
