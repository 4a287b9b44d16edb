"""Cloud mode syncs checkpoints and artifacts to a bucket: a real GCS API server on loopback
(gcp-storage-emulator) receives the uploads through google-cloud-storage."""

from __future__ import annotations

import json

import pytest

from trainer import checkpoints
from trainer.cli import main
from trainer.run_folder import ATTEMPTS

pytestmark = pytest.mark.gcs


def test_cloud_mode_uploads_checkpoints_and_artifacts(gcs_emulator, monkeypatch, tmp_path, tiny_config_file):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    client.create_bucket("trainer-artifacts")

    out = tmp_path / "cloud-run"
    code = main(
        [
            "--config",
            str(tiny_config_file),
            "--mode",
            "cloud",
            "--epochs",
            "2",
            "--output-dir",
            str(out),
            "--set",
            "runtime.bucket=gs://trainer-artifacts/team-a",
        ]
    )
    assert code == 0
    names = {b.name for b in client.list_blobs("trainer-artifacts")}
    run = "team-a/runs/cloud-run"
    for artifact in (
        "metrics.json",
        "manifest.json",
        "labels.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "confusion_matrix.png",
        "training.log",
    ):
        assert f"{run}/{artifact}" in names, artifact
    assert not any(n.startswith(f"{run}/checkpoints/") for n in names), "checkpoints live under checkpoints/"
    synced = {n.split("/")[3] for n in names if n.startswith("team-a/checkpoints/cloud-run/")}
    # every checkpoint, each with its completion marker, and the attempts record that resumes count on
    assert synced == {"checkpoint-15", "checkpoint-30", ATTEMPTS}
    for step in (15, 30):
        assert f"team-a/checkpoints/cloud-run/checkpoint-{step}/{checkpoints.MARKER}" in names
    manifest = json.loads(client.bucket("trainer-artifacts").blob(f"{run}/manifest.json").download_as_bytes())
    assert manifest["mode"] == "cloud" and manifest["bucket"] == "gs://trainer-artifacts/team-a"
    local = json.loads((out / "metrics.json").read_text())
    remote = json.loads(client.bucket("trainer-artifacts").blob(f"{run}/metrics.json").download_as_bytes())
    assert remote == local


def test_local_mode_never_syncs(gcs_emulator, monkeypatch, tmp_path, tiny_config_file):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    client.create_bucket("local-only")
    code = main(
        [
            "--config",
            str(tiny_config_file),
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path / "r"),
            "--set",
            "runtime.bucket=gs://local-only",
        ]
    )
    assert code == 0
    assert list(client.list_blobs("local-only")) == []


def test_missing_bucket_fails_before_training(gcs_emulator, monkeypatch, tmp_path, tiny_config_file, capsys):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    out = tmp_path / "never"
    code = main(
        [
            "--config",
            str(tiny_config_file),
            "--mode",
            "cloud",
            "--output-dir",
            str(out),
            "--set",
            "runtime.bucket=gs://no-such-bucket",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "trainer: error: bucket gs://no-such-bucket does not exist" in err
    assert not out.exists()


def test_data_is_read_from_gs_urls(gcs_emulator, monkeypatch, tmp_path, tiny_config_file, tiny_csv):
    import hashlib

    import datasets
    import pandas as pd
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = client.create_bucket("team-data")
    bucket.blob("tweets/tiny.csv").upload_from_filename(str(tiny_csv))
    saved = tmp_path / "saved"
    datasets.Dataset.from_pandas(pd.read_csv(tiny_csv)).save_to_disk(str(saved))
    for f in saved.iterdir():
        bucket.blob(f"saved/{f.name}").upload_from_filename(str(f))

    out = tmp_path / "from-gcs"
    assert main(["--config", str(tiny_config_file), "--epochs", "1", "--output-dir", str(out),
                 "--set", "data.path=gs://team-data/tweets/tiny.csv"]) == 0  # fmt: skip
    source = json.loads((out / "manifest.json").read_text())["data"]["sources"][0]
    assert source["path"] == "gs://team-data/tweets/tiny.csv"
    assert source["sha256"] == hashlib.sha256(tiny_csv.read_bytes()).hexdigest()

    out = tmp_path / "from-gcs-folder"
    assert main(["--config", str(tiny_config_file), "--epochs", "1", "--output-dir", str(out),
                 "--set", "data.path=gs://team-data/saved"]) == 0  # fmt: skip
    assert json.loads((out / "manifest.json").read_text())["data"]["rows"]["train"] == 240


def test_missing_gs_object_is_a_user_error(gcs_emulator, monkeypatch, tmp_path, tiny_config_file, capsys):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket("empty-data")
    code = main(["--config", str(tiny_config_file), "--output-dir", str(tmp_path / "x"),
                 "--set", "data.path=gs://empty-data/nope.csv"])  # fmt: skip
    assert code == 2
    assert "trainer: error: data file not found: gs://empty-data/nope.csv" in capsys.readouterr().err
