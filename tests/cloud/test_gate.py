"""The least-privilege gate: GCS JSON API calls -> IAM permissions, roles read from infra/iam.tf, and
the trainer's bucket check through it (the GCS emulator behind the gate)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.cloud.conftest import emulator_client
from tests.standins.gcs_gate import (
    ROLE_PERMISSIONS,
    Check,
    Gate,
    Policy,
    UnmappedCall,
    granted_roles,
    permissions_of,
    required,
)
from tests.support import ROOT
from trainer.errors import UserError

IAM_TF = ROOT / "infra" / "iam.tf"
SA = "tweet-trainer-vm@demo-project.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/storage/v1/b?project=p", [("storage.buckets.list", None)]),
        ("POST", "/storage/v1/b?project=p", [("storage.buckets.create", None)]),
        ("GET", "/storage/v1/b/art?fields=name", [("storage.buckets.get", "art")]),
        ("PATCH", "/storage/v1/b/art", [("storage.buckets.update", "art")]),
        ("DELETE", "/storage/v1/b/art", [("storage.buckets.delete", "art")]),
        ("GET", "/storage/v1/b/art/iam", [("storage.buckets.getIamPolicy", "art")]),
        ("PUT", "/storage/v1/b/art/iam", [("storage.buckets.setIamPolicy", "art")]),
        ("GET", "/storage/v1/b/art/iam/testPermissions?permissions=x", []),
        ("GET", "/storage/v1/b/art/o?maxResults=1&prefix=runs%2Fr%2F", [("storage.objects.list", "art")]),
        ("GET", "/storage/v1/b/art/o/runs%2Fr%2Fmetrics.json", [("storage.objects.get", "art")]),
        ("PATCH", "/storage/v1/b/art/o/a%2Fb", [("storage.objects.update", "art")]),
        ("DELETE", "/storage/v1/b/art/o/a%2Fb?generation=1", [("storage.objects.delete", "art")]),
        ("POST", "/upload/storage/v1/b/art/o?uploadType=multipart", [("storage.objects.create", "art")]),
        ("POST", "/upload/storage/v1/b/art/o?uploadType=resumable", [("storage.objects.create", "art")]),
        ("PUT", "/upload/storage/v1/b/art/o?upload_id=7", [("storage.objects.create", "art")]),
        ("GET", "/download/storage/v1/b/art/o/a/b.csv?alt=media", [("storage.objects.get", "art")]),
        ("POST", "/storage/v1/b/art/o/x/compose",
         [("storage.objects.get", "art"), ("storage.objects.create", "art")]),
        ("POST", "/storage/v1/b/art/o/x/rewriteTo/b/other/o/y",
         [("storage.objects.get", "art"), ("storage.objects.create", "other")]),
    ],
)  # fmt: skip
def test_each_json_api_call_maps_to_the_permissions_gcs_checks(method, path, expected):
    assert [(c.permission, c.bucket) for c in required(method, path)] == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/art/object.csv"),  # XML API
        ("POST", "/batch/storage/v1"),
        ("GET", "/b/art/o"),  # the emulator's alias without /storage/v1
        ("POST", "/storage/v1/b/art"),
        ("GET", "/upload/storage/v1/b/art/o"),
        ("GET", "/wipe"),
    ],
)
def test_unknown_calls_are_refused_not_let_through(method, path):
    with pytest.raises(UnmappedCall):
        required(method, path)


def test_iam_tf_grants_the_vm_object_admin_on_its_bucket_and_nothing_more_on_storage():
    roles = granted_roles(IAM_TF)
    assert roles["bucket"] == {"roles/storage.objectAdmin"}
    assert roles["other buckets"] == {"roles/storage.objectViewer"}  # data_read_buckets: read only
    assert "roles/logging.logWriter" in roles["project"]
    policy = Policy.from_iam_tf(IAM_TF, SA, "art")
    assert "storage.objects.create" in policy.on_bucket and "storage.objects.delete" in policy.on_bucket
    assert "storage.buckets.get" not in policy.on_bucket | policy.on_project
    assert policy.on_project == frozenset()  # logWriter grants no storage permission


def test_role_table_follows_googles_reference():
    admin = ROLE_PERMISSIONS["roles/storage.objectAdmin"]
    assert not any(p.startswith("storage.buckets.") for p in admin)
    assert ROLE_PERMISSIONS["roles/storage.legacyBucketReader"] == {
        "storage.buckets.get",
        "storage.objects.list",
    }
    assert "storage.objects.delete" not in ROLE_PERMISSIONS["roles/storage.objectCreator"]
    assert ROLE_PERMISSIONS["roles/storage.objectViewer"] < admin
    assert admin < ROLE_PERMISSIONS["roles/storage.admin"]
    with pytest.raises(ValueError, match=r"roles/storage\.hmacKeyAdmin"):
        permissions_of({"roles/storage.hmacKeyAdmin"})


def test_policy_denies_other_buckets_and_project_calls():
    policy = Policy(SA, "art", permissions_of({"roles/storage.objectAdmin"}), frozenset())
    assert policy.denied([Check("storage.objects.get", "art", "object")]) is None
    assert policy.denied([Check("storage.objects.get", "other", "object")]).bucket == "other"
    assert policy.denied([Check("storage.buckets.list", None, "bucket")]).permission == "storage.buckets.list"
    body = json.loads(policy.forbidden_body(Check("storage.buckets.get", "art", "bucket")))
    assert body["error"]["code"] == 403
    assert body["error"]["message"] == (
        f"{SA} does not have storage.buckets.get access to the Google Cloud Storage bucket. "
        "Permission 'storage.buckets.get' denied on resource (or it may not exist)."
    )
    assert body["error"]["errors"][0]["reason"] == "forbidden"


def _iam_without(tmp_path: Path, role: str) -> Path:
    text = IAM_TF.read_text()
    assert f'"{role}"' in text
    path = tmp_path / "iam.tf"
    path.write_text(text.replace(f'"{role}"', '"roles/storage.objectViewer"'))
    return path


@pytest.fixture
def bucket(gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    name = "gate-art"
    client = emulator_client(gcs_emulator)
    if client.lookup_bucket(name) is None:
        client.create_bucket(name)
    return name, int(gcs_emulator.rsplit(":", 1)[1])


@pytest.mark.gcs
def test_trainer_bucket_check_passes_with_object_admin_where_bucket_exists_is_forbidden(bucket, monkeypatch):
    from google.api_core import exceptions

    from trainer.storage import BucketSync

    name, port = bucket
    with Gate(port, Policy.from_iam_tf(IAM_TF, SA, name)) as gate:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gate.url)
        sync = BucketSync(f"gs://{name}", "run-1")
        sync.check()  # list + probe write/delete: all objectAdmin grants
        with pytest.raises(exceptions.Forbidden, match=r"storage\.buckets\.get"):
            sync.bucket.exists()  # what the old check called: GCS answers 403 to objectAdmin
        with pytest.raises(UserError, match=f"bucket gs://no-such-{name} does not exist"):
            BucketSync(f"gs://no-such-{name}", "run-1").check()
    assert ("GET", f"/storage/v1/b/{name}?fields=name&prettyPrint=false", "storage.buckets.get") in gate.log


@pytest.mark.gcs
def test_trainer_bucket_check_fails_in_one_line_when_iam_tf_lacks_object_admin(bucket, monkeypatch, tmp_path):
    from trainer.storage import BucketSync

    name, port = bucket
    policy = Policy.from_iam_tf(_iam_without(tmp_path, "roles/storage.objectAdmin"), SA, name)
    with Gate(port, policy) as gate:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gate.url)
        with pytest.raises(UserError) as err:
            BucketSync(f"gs://{name}", "run-1").check()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"bucket gs://{name} is not writable by this run's account")
    assert "storage.objects.create" in message and "roles/storage.objectAdmin" in message


@pytest.mark.gcs
def test_links_handed_out_lead_back_through_the_gate(bucket, monkeypatch):
    """mediaLink and resumable-upload URLs name the gate, never the emulator behind it."""
    name, port = bucket
    emulator_client(f"http://127.0.0.1:{port}").bucket(name).blob("direct/data.csv").upload_from_string(
        b"text,label\nhi,a\n"
    )
    with Gate(port, Policy.from_iam_tf(IAM_TF, SA, name)) as gate:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gate.url)
        client = emulator_client(gate.url)
        (blob,) = client.list_blobs(name, prefix="direct/")
        assert blob.media_link.startswith(gate.url)
        assert blob.download_as_bytes() == b"text,label\nhi,a\n"
        big = client.bucket(name).blob("direct/big.bin")
        big.chunk_size = 256 * 1024  # size unknown: a resumable upload in three chunks
        big.upload_from_file(io.BytesIO(b"x" * (600 * 1024)))
        assert big.download_as_bytes() == b"x" * (600 * 1024)
    uploads = [e for e in gate.log if e[1].startswith(f"/upload/storage/v1/b/{name}/o")]
    assert len(uploads) >= 3 and all(e[2] == "allowed" for e in uploads), uploads
