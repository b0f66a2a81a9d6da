"""The pure parts of ``nodeload images`` and ``nodeload rm``: names, which node has the old
version, which records go with an image, and which containers stand in the way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodeload.containerd.api import containerd_types_pb2, cri_pb2, images_pb2
from nodeload.errors import UsageError
from nodeload.image_removal import records_to_delete, users
from nodeload.node_images import ImageCopy, NodeImages, _listed, compare, image_names

ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
M1, M2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
NOW = datetime(2026, 12, 8, tzinfo=UTC)


def _copy(name: str, image_id: str, minutes: int) -> ImageCopy:
    return ImageCopy(name, M1, "", M1, image_id, 10, True, True, True, NOW + timedelta(minutes=minutes))


def test_names_are_normalized_as_push_names_them() -> None:
    assert image_names(["app:dev", "docker.io/library/app:dev", "ghcr.io/o/x", ID_A]) == [
        "docker.io/library/app:dev",
        "ghcr.io/o/x:latest",
        ID_A,
    ]
    with pytest.raises(UsageError):
        image_names(["Not A Name"])


def test_the_node_whose_copy_is_not_the_newest_is_marked() -> None:
    name = "docker.io/library/app:dev"
    nodes = [
        NodeImages("n1", {name: _copy(name, ID_A, 5)}),
        NodeImages("n2", {name: _copy(name, ID_B, 1)}),
        NodeImages("n3"),
        NodeImages("n4", error="unreachable"),
    ]
    [view] = compare([name], nodes)
    assert view.image_id == ID_A  # the latest write wins, not the majority
    assert view.differing == ["n2"]
    assert [(h.node, h.copy is not None) for h in view.holders] == [("n1", True), ("n2", True), ("n3", False)]
    assert compare(None, nodes)[0].name == name
    # Every node on one ID: nobody is marked.
    same = [NodeImages("n1", {name: _copy(name, ID_A, 1)}), NodeImages("n2", {name: _copy(name, ID_A, 2)})]
    assert compare([name], same)[0].differing == []


def test_cri_id_records_are_listed_only_once_no_name_points_at_their_target() -> None:
    def record(name: str, target: str) -> images_pb2.Image:
        return images_pb2.Image(name=name, target=containerd_types_pb2.Descriptor(digest=target))

    records = {
        "docker.io/library/app:dev": record("docker.io/library/app:dev", M2),
        ID_B: record(ID_B, M2),  # the current version's: the name shows it
        ID_A: record(ID_A, M1),  # left behind when the tag moved
    }
    assert _listed(records) == ["docker.io/library/app:dev", ID_A]


def test_cri_entries_go_with_the_image_unless_another_name_stays_on_its_target() -> None:
    targets = {"x:dev": M1, ID_A: M1, "x@" + M1: M1, "y:dev": M2}
    assert records_to_delete(targets, ["x:dev"], {"x:dev": ID_A}) == {"x:dev": ["x:dev", ID_A, "x@" + M1]}
    aliased = {**targets, "x:also": M1}
    assert records_to_delete(aliased, ["x:dev"], {"x:dev": ID_A}) == {"x:dev": ["x:dev"]}
    both = records_to_delete(aliased, ["x:dev", "x:also", "gone:1"], {"x:dev": ID_A, "x:also": ID_A})
    assert both == {
        "x:dev": ["x:dev", ID_A, "x@" + M1],
        "x:also": ["x:also"],
    }  # entries once; absent left out


def test_containers_in_the_way() -> None:
    def cri(state: int, image_ref: str, image: str = "") -> cri_pb2.Container:
        return cri_pb2.Container(
            id="c",
            metadata=cri_pb2.ContainerMetadata(name="app"),
            image=cri_pb2.ImageSpec(image=image),
            image_ref=image_ref,
            state=state,
            labels={"io.kubernetes.pod.name": "p", "io.kubernetes.pod.namespace": "default"},
        )

    running = cri(cri_pb2.CONTAINER_RUNNING, ID_A)
    [user] = users(["x:dev", ID_A], ID_A, [running], [])
    assert (user.kind, user.name, user.state, user.pod) == ("cri", "app", "running", "default/p")
    assert users(["x:dev", ID_A], ID_A, [cri(cri_pb2.CONTAINER_EXITED, ID_A)], []) == []
    # The ID stays (another name holds it): a container running by ID is not in the way.
    assert users(["x:dev"], ID_A, [running], []) == []
    assert users(["x:dev"], ID_A, [cri(cri_pb2.CONTAINER_CREATED, "", "x:dev")], [])[0].state == "created"
    plain = [("mine", "x:dev", "record"), ("other", "y:dev", "record")]
    assert [u.id for u in users(["x:dev"], ID_A, [], plain)] == ["mine"]
