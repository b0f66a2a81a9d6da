"""``nodeload serve`` as the OCI distribution spec describes a registry, against sandbox nodes
(sshd + containerd): every status code the spec's endpoint table lists for the endpoints it
serves, artifacts and other manifests that are no image, tag lists, referrers; then real
clients (skopeo, oras-py) and what the nodes hold once the run is over.

The table (distribution-spec, "Endpoints"): end-1 ``GET /v2/``; end-2 ``GET/HEAD`` blobs;
end-3 ``GET/HEAD`` manifests; end-4a/4b ``POST`` uploads; end-5 ``PATCH``; end-6 ``PUT``
uploads; end-7 ``PUT`` manifests; end-8a/8b tag lists; end-9/end-10 ``DELETE`` (refused: 405,
as the spec allows a registry that does not delete); end-11 mounts; end-12a/12b referrers;
end-13 upload status.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from nodeload.sandbox import Sandbox
from tests.e2e.pushing import content_sizes, image_names, run_image

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ROCKET = "application/vnd.example.rocket.v1"  # an artifact type, as ORAS users make them up


@dataclass
class Served:
    """A running ``nodeload serve -- CMD`` whose CMD waits for the test; its login and report."""

    address: str
    user: str
    password: str
    directory: Path
    status: int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("auth", (self.user, self.password))
        return requests.request(method, f"http://{self.address}{path}", timeout=60, **kwargs)

    def blob(self, repo: str, data: bytes, media_type: str = OCI_LAYER) -> dict[str, Any]:
        """Upload ``data`` (monolithic POST); its descriptor."""
        digest = sha256(data)
        done = self.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data=data)
        assert done.status_code == 201, done.text
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> requests.Response:
        return self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type}
        )

    @property
    def auth_file(self) -> Path:
        """The run's login as skopeo and oras read it (copied: serve deletes its own at exit)."""
        return self.directory / "auth.json"


@contextlib.contextmanager
def serving(sandbox: Sandbox, directory: Path) -> Iterator[Served]:
    """``nodeload serve --json`` to every node of ``sandbox``; stopped, its report read, on leaving."""
    directory.mkdir(parents=True, exist_ok=True)
    ready, stop = directory / "address", directory / "stop"
    script = (
        f'cp "$REGISTRY_AUTH_FILE" {directory}/auth.json && echo "$NODELOAD_REGISTRY" > {ready}.tmp '
        f"&& mv {ready}.tmp {ready} && while [ ! -e {stop} ]; do sleep 0.2; done"
    )
    argv = [sys.executable, "-m", "nodeload", "serve", "--json", "-F", str(sandbox.ssh_config_path)]
    for alias in sandbox.aliases:
        argv += ["--node", alias]
    proc = subprocess.Popen(
        [*argv, "--", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        address = ready.read_text().strip()
        login = json.loads((directory / "auth.json").read_text())["auths"][address]["auth"]
        user, _, password = base64.b64decode(login).decode().partition(":")
        served = Served(address, user, password, directory)
        yield served
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=300)
    served.status = proc.returncode
    served.report = json.loads(out) if out.strip() else {"stderr": err}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def document(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def image_manifest(config: dict[str, Any], layers: list[dict[str, Any]], **extra: Any) -> bytes:
    return document(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers, **extra}
    )


def descriptor(body: bytes, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(body), "size": len(body)}


def code(response: requests.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def not_an_image(served: Served, repo: str, seed: str) -> bytes:
    """The conformance suite's kind of manifest: one layer, a config without diff_ids. Valid OCI,
    not runnable: the registry stores it, the nodes make no image of it."""
    config = served.blob(repo, document({"architecture": "amd64", "os": "linux", "seed": seed}), OCI_CONFIG)
    layer = served.blob(repo, f"layer {seed}".encode() * 100)
    return image_manifest(config, [layer])


def artifact(
    served: Served, repo: str, payload: bytes, subject: bytes | None = None, kind: str = ROCKET
) -> bytes:
    """An OCI 1.1 artifact: a config that is not JSON at all, one blob, maybe a subject."""
    config = served.blob(repo, b"\x00not json\xff" + payload[:8], kind + ".config")
    blob = served.blob(repo, payload, kind + ".payload")
    extra: dict[str, Any] = {"artifactType": kind, "annotations": {"org.example.seed": payload[:8].hex()}}
    if subject is not None:
        extra["subject"] = descriptor(subject)
    return image_manifest(config, [blob], **extra)


@pytest.fixture(scope="module")
def served(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One run of ``nodeload serve`` over both sandbox nodes, shared by the endpoint tests."""
    with serving(sandbox, tmp_path_factory.mktemp("served")) as endpoint:
        yield endpoint
    nodes = endpoint.report.get("nodes", [])
    assert endpoint.status == 0 and nodes and all(n["status"] == "ok" for n in nodes), endpoint.report


def test_base_blobs_and_uploads_answer_the_spec_table(served: Served) -> None:
    repo = f"spec/blobs-{secrets.token_hex(3)}"
    assert served.request("GET", "/v2/").status_code == 200  # end-1
    assert served.request("GET", "/v2/", auth=None).status_code == 401
    data = secrets.token_bytes(70_000)
    digest = sha256(data)
    missing = served.request("HEAD", f"/v2/{repo}/blobs/{digest}")  # end-2: 404
    assert missing.status_code == 404
    assert code(served.request("GET", f"/v2/{repo}/blobs/{digest}")) == "BLOB_UNKNOWN"
    started = served.request("POST", f"/v2/{repo}/blobs/uploads/")  # end-4a: 202 and a location
    assert started.status_code == 202 and started.headers["Location"]
    location = started.headers["Location"]
    assert served.request("GET", location).status_code == 204  # end-13
    patched = served.request("PATCH", location, data=data[:30_000], headers={"Content-Range": "0-29999"})
    assert patched.status_code == 202 and patched.headers["Range"] == "0-29999"  # end-5
    out_of_order = served.request(
        "PATCH", location, data=data[40_000:], headers={"Content-Range": "40000-69999"}
    )
    assert out_of_order.status_code == 416
    wrong = served.request("PUT", f"{location}?digest={sha256(b'other')}", data=data[30_000:])  # end-6: 400
    assert wrong.status_code == 400 and code(wrong) == "DIGEST_INVALID"
    assert served.request("GET", location).status_code == 404  # end-13: the upload is gone
    unknown = served.request("PATCH", f"/v2/{repo}/blobs/uploads/{secrets.token_hex(16)}", data=b"x")
    assert unknown.status_code == 404 and code(unknown) == "BLOB_UPLOAD_UNKNOWN"
    again = served.request("POST", f"/v2/{repo}/blobs/uploads/").headers["Location"]
    served.request("PATCH", again, data=data[:30_000], headers={"Content-Range": "0-29999"})
    finished = served.request("PUT", f"{again}?digest={digest}", data=data[30_000:])  # end-6: 201
    assert finished.status_code == 201 and finished.headers["Docker-Content-Digest"] == digest
    head = served.request("HEAD", f"/v2/{repo}/blobs/{digest}")  # end-2: 200
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    assert served.request("GET", f"/v2/{repo}/blobs/{digest}").content == data
    bad = served.request("POST", f"/v2/{repo}/blobs/uploads/?digest=sha256:nothex", data=b"x")  # end-4b
    assert bad.status_code == 400 and code(bad) == "DIGEST_INVALID"
    mounted = served.request("POST", f"/v2/other-{repo}/blobs/uploads/?mount={digest}&from={repo}")  # end-11
    assert mounted.status_code == 201 and mounted.headers["Location"].endswith(digest)
    lacking = sha256(secrets.token_bytes(8))
    assert served.request("POST", f"/v2/{repo}/blobs/uploads/?mount={lacking}&from=x").status_code == 202
    assert served.request("DELETE", f"/v2/{repo}/blobs/{digest}").status_code == 405  # end-10


def test_manifests_of_every_kind_are_taken_and_client_errors_are_4xx(served: Served) -> None:
    repo = f"spec/manifests-{secrets.token_hex(3)}"
    plain = not_an_image(served, repo, "a")
    put = served.manifest(repo, "plain", plain)  # end-7: 201, by tag
    assert put.status_code == 201, put.text
    assert put.headers["Docker-Content-Digest"] == sha256(plain)
    assert put.headers["Location"] == f"/v2/{repo}/manifests/{sha256(plain)}"
    rocket = artifact(served, repo, b"payload-1")
    assert served.manifest(repo, sha256(rocket), rocket).status_code == 201  # by digest
    index = document(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(plain), descriptor(rocket)]}
    )
    assert served.manifest(repo, "both", index, OCI_INDEX).status_code == 201  # an index of no image

    for ref, body, media_type in (("plain", plain, OCI_MANIFEST), (sha256(rocket), rocket, OCI_MANIFEST),
                                  ("both", index, OCI_INDEX)):  # fmt: skip
        got = served.request("GET", f"/v2/{repo}/manifests/{ref}")  # end-3: 200
        assert got.status_code == 200 and got.content == body
        assert got.headers["Content-Type"] == media_type and got.headers["Docker-Content-Digest"] == sha256(
            body
        )
        head = served.request("HEAD", f"/v2/{repo}/manifests/{ref}")
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(body)
    for method in ("GET", "HEAD"):  # end-3: 404, a malformed reference included
        for ref in ("never-pushed", sha256(b"never"), ".INVALID_MANIFEST_NAME"):
            assert served.request(method, f"/v2/{repo}/manifests/{ref}").status_code == 404, (method, ref)

    layer = served.blob(repo, b"some layer")
    config = served.blob(repo, b"{}", OCI_CONFIG)
    unknown_blob = {**layer, "digest": sha256(b"never uploaded")}
    refused = {
        "MANIFEST_INVALID": (served.manifest(repo, "bad", b"{not json"),),
        "MANIFEST_BLOB_UNKNOWN": (served.manifest(repo, "bad", image_manifest(config, [unknown_blob])),),
        "SIZE_INVALID": (served.manifest(repo, "bad", image_manifest(config, [{**layer, "size": 3}])),),
        "DIGEST_INVALID": (served.manifest(repo, sha256(b"other"), plain),),
        "TAG_INVALID": (served.manifest(repo, ".bad-tag", plain),),
    }
    for expected, (response,) in refused.items():
        assert response.status_code == 400 and code(response) == expected, (expected, response.text)
    assert served.request("DELETE", f"/v2/{repo}/manifests/plain").status_code == 405  # end-9


def test_tag_lists_paginate(served: Served) -> None:
    repo = f"spec/tags-{secrets.token_hex(3)}"
    body = not_an_image(served, repo, "tags")
    for tag in ("c", "a", "b", "d"):
        assert served.manifest(repo, tag, body).status_code == 201
    listed = served.request("GET", f"/v2/{repo}/tags/list")  # end-8a
    assert listed.status_code == 200 and listed.json() == {"name": repo, "tags": ["a", "b", "c", "d"]}
    first = served.request("GET", f"/v2/{repo}/tags/list?n=2")  # end-8b
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["Link"] == f'</v2/{repo}/tags/list?n=2&last=b>; rel="next"'
    second = served.request("GET", f"/v2/{repo}/tags/list?n=2&last=b")
    assert second.json()["tags"] == ["c", "d"] and "Link" not in second.headers
    assert served.request("GET", f"/v2/{repo}/tags/list?n=0").json()["tags"] == []
    assert served.request("GET", f"/v2/{repo}/tags/list?last=c").json()["tags"] == ["d"]
    unknown = served.request("GET", f"/v2/{repo}-none/tags/list")
    assert unknown.status_code == 404 and code(unknown) == "NAME_UNKNOWN"
    # A tag moved to other content is listed once, and answers with the new content.
    moved = not_an_image(served, repo, "moved")
    assert served.manifest(repo, "a", moved).status_code == 201
    assert served.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b", "c", "d"]
    assert served.request("GET", f"/v2/{repo}/manifests/a").content == moved
    assert served.request("GET", f"/v2/{repo}/manifests/b").content == body


def test_referrers_list_what_names_a_subject_filtered_by_artifact_type(served: Served) -> None:
    repo = f"spec/referrers-{secrets.token_hex(3)}"
    subject = not_an_image(served, repo, "subject")
    assert served.manifest(repo, "v1", subject).status_code == 201
    signature = artifact(served, repo, b"signature", subject, kind="application/vnd.example.signature")
    sbom = artifact(served, repo, b"sbom", subject, kind="application/vnd.example.sbom")
    for body in (signature, sbom):
        put = served.manifest(repo, sha256(body), body)
        assert put.status_code == 201 and put.headers["OCI-Subject"] == sha256(subject)
    listed = served.request("GET", f"/v2/{repo}/referrers/{sha256(subject)}")  # end-12a
    assert listed.status_code == 200 and listed.headers["Content-Type"] == OCI_INDEX
    index = listed.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sha256(signature), sha256(sbom)}
    assert by_digest[sha256(sbom)] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(sbom),
        "size": len(sbom),
        "artifactType": "application/vnd.example.sbom",
        "annotations": {"org.example.seed": b"sbom".hex()},
    }
    filtered = served.request(
        "GET", f"/v2/{repo}/referrers/{sha256(subject)}?artifactType=application/vnd.example.sbom"
    )  # end-12b
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [sha256(sbom)]
    none = served.request("GET", f"/v2/{repo}/referrers/{sha256(b'nothing refers to this')}")
    assert none.status_code == 200 and none.json()["manifests"] == []
    assert served.request("GET", f"/v2/{repo}/referrers/sha256:short").status_code == 400
    # No OCI-Subject for a manifest without one.
    assert "OCI-Subject" not in served.manifest(repo, "v2", not_an_image(served, repo, "v2")).headers


def test_real_clients_oras_and_skopeo_on_one_node_that_keeps_exactly_what_was_pushed(
    node_sandbox: Sandbox, app_layout: tuple[Path, int], tmp_path: Path
) -> None:
    import oras.oci
    import oras.provider

    node = node_sandbox.node("node-1")
    before = content_sizes(node)
    layout, _ = app_layout
    files = tmp_path / "files"
    files.mkdir()
    (files / "rocket.txt").write_text("a rocket, not an image\n")
    (files / "config.bin").write_bytes(b"\x89 a config that is not JSON")
    with serving(node_sandbox, tmp_path / "run1") as served:
        target = f"docker://{served.address}/apps/web:v1"
        copy = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--authfile", str(served.auth_file)]
        subprocess.run([*copy, f"oci:{layout}:v1", target], check=True, timeout=300)
        image = served.request("GET", "/v2/apps/web/manifests/v1")
        assert image.status_code == 200
        oras_auth = tmp_path / "docker-config.json"
        oras_auth.write_text(served.auth_file.read_text())  # the same {"auths": ...} form
        # The endpoint asks for HTTP Basic: oras-py's "basic" backend answers it from the config.
        registry = oras.provider.Registry(hostname=served.address, insecure=True, auth_backend="basic")
        pushed = registry.push(
            f"{served.address}/apps/rocket:v1",
            config_path=str(oras_auth),
            files=[f"{files / 'rocket.txt'}:{ROCKET}.payload"],
            manifest_config=f"{files / 'config.bin'}:{ROCKET}.config",
            disable_path_validation=True,
            quiet=True,
        )
        assert pushed.status_code == 201
        subject = oras.oci.Subject(OCI_MANIFEST, sha256(image.content), len(image.content))
        signed = registry.push(
            f"{served.address}/apps/web:v1-signature",
            config_path=str(oras_auth),
            files=[f"{files / 'rocket.txt'}:application/vnd.example.signature"],
            manifest_annotations={"org.example.signed-by": "test"},
            subject=subject,
            disable_path_validation=True,
            quiet=True,
        )
        assert signed.status_code == 201 and signed.headers["OCI-Subject"] == subject.digest
        referrers = registry.do_request(f"http://{served.address}/v2/apps/web/referrers/{subject.digest}")
        (listed,) = referrers.json()["manifests"]
        assert listed["digest"] == signed.headers["Docker-Content-Digest"]
        assert listed["annotations"] == {"org.example.signed-by": "test"}
        tags = subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", "--authfile", str(served.auth_file),
             f"docker://{served.address}/apps/web"],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert json.loads(tags.stdout)["Tags"] == ["v1", "v1-signature"]
        pushed_blobs = {sha256(image.content)} | _named(served, "apps/web", image.content)
        for repo, tag in (("apps/rocket", "v1"), ("apps/web", "v1-signature")):
            body = served.request("GET", f"/v2/{repo}/manifests/{tag}").content
            pushed_blobs |= {sha256(body)} | _named(served, repo, body)

    assert served.status == 0, served.report
    (report,) = served.report["nodes"]
    assert report["status"] == "ok" and report["errors"] == []
    assert [r["name"] for r in report["images"]] == ["docker.io/apps/web:v1"]
    stored = {m["name"]: m for m in report["stored"]}
    assert set(stored) == {"docker.io/apps/rocket:v1", "docker.io/apps/web:v1-signature"}
    assert "not an image config" in stored["docker.io/apps/rocket:v1"]["not_an_image"]
    # After the run (its lease gone, containerd's GC run): the node holds exactly what was pushed,
    # the artifacts included, and the image runs.
    after = content_sizes(node)
    assert set(after) - set(before) == pushed_blobs - set(before)
    assert pushed_blobs <= set(after)
    assert "docker.io/apps/rocket:v1" not in image_names(node)  # no image record for an artifact
    assert run_image(node, "docker.io/apps/web:v1", f"t-{secrets.token_hex(4)}") == "hello from v1"

    # A later run finds the tags and referrers on the node.
    with serving(node_sandbox, tmp_path / "run2") as again:
        assert again.request("GET", "/v2/apps/web/tags/list").json()["tags"] == ["v1", "v1-signature"]
        listed_again = again.request("GET", f"/v2/apps/web/referrers/{subject.digest}").json()["manifests"]
        assert [m["digest"] for m in listed_again] == [listed["digest"]]
        rocket = again.request("GET", "/v2/apps/rocket/manifests/v1")
        assert rocket.status_code == 200 and rocket.json()["config"]["mediaType"] == f"{ROCKET}.config"
    assert again.status == 0 and again.report["nodes"][0]["status"] == "ok"


def _named(served: Served, repo: str, body: bytes) -> set[str]:
    """The config and layers a manifest names (the digests the node must hold for it)."""
    manifest = json.loads(body)
    return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
