"""GCS: read data from gs:// URLs; in cloud mode, copy checkpoints and artifacts to a bucket.

Credentials come from the environment as usual for Google clients (the VM's service account on GCP,
application-default credentials elsewhere); `STORAGE_EMULATOR_HOST` points the client at an emulator.
The VM's account holds only roles/storage.objectAdmin on the bucket (infra/iam.tf): object calls,
never bucket metadata (storage.buckets.get), so nothing here calls bucket.exists() or get_bucket().
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from trainer.bucket import client as _client
from trainer.bucket import first_line, split_bucket_url
from trainer.errors import UserError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tweet-trainer" / "gcs"


def download(url: str, client=None) -> Path:
    """A local copy of gs://bucket/object (a file) or gs://bucket/prefix/ (a save_to_disk folder).

    Copies live in the cache under the object's generation, so a file replaced in the bucket is
    fetched again and an unchanged one is not."""
    from google.api_core import exceptions

    bucket_name, name = split_bucket_url(url)
    client = client or _client()
    try:
        blob = client.bucket(bucket_name).get_blob(name) if name else None
        if blob is not None:
            target = cache_dir() / bucket_name / str(blob.generation) / name
            if not target.is_file() or target.stat().st_size != blob.size:
                target.parent.mkdir(parents=True, exist_ok=True)
                blob.download_to_filename(str(target))
            return target
        blobs = [
            b
            for b in client.list_blobs(bucket_name, prefix=name.rstrip("/") + "/")
            if not b.name.endswith("/")
        ]
    except exceptions.NotFound:
        raise UserError(f"data {url}: bucket gs://{bucket_name} does not exist") from None
    except exceptions.GoogleAPIError as exc:
        raise UserError(f"data {url} is not readable: {exc}") from None
    if not blobs:
        raise UserError(f"data file not found: {url} (no such object or folder in the bucket)")
    folder = cache_dir() / bucket_name / "folders" / name.rstrip("/")
    shutil.rmtree(folder, ignore_errors=True)  # a fresh copy: nothing left from an older version
    for b in blobs:
        target = folder / b.name[len(name.rstrip("/")) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        b.download_to_filename(str(target))
    return folder


class BucketSync:
    """Copies a run to the bucket in the layout the Terraform lifecycle rule and `make fetch` expect:
    checkpoints under gs://bucket[/prefix]/checkpoints/<run>/ (deleted by age), everything else under
    gs://bucket[/prefix]/runs/<run>/ (kept)."""

    def __init__(self, url: str, run_name: str, client=None):
        bucket_name, prefix = split_bucket_url(url)
        self.client = client or _client()
        self.bucket = self.client.bucket(bucket_name)
        base = f"{prefix}/" if prefix else ""
        self.run_prefix = f"{base}runs/{run_name}"
        self.checkpoint_prefix = f"{base}checkpoints/{run_name}"
        self.url = f"gs://{bucket_name}/{self.run_prefix}"

    def check(self) -> None:
        """Fail before training, not after hours of GPU time, when the bucket is missing or the run's
        account may not write there: list one object (storage.objects.list; a missing bucket answers
        404), then write and delete a probe under the run's prefix (storage.objects.create/delete)."""
        from google.api_core import exceptions

        where = f"gs://{self.bucket.name}"
        probe = self.bucket.blob(f"{self.run_prefix}/.write-check")
        try:
            next(iter(self.client.list_blobs(self.bucket, prefix=self.run_prefix + "/", max_results=1)), None)
            probe.upload_from_string(b"", content_type="application/octet-stream")
            probe.delete()
        except exceptions.NotFound:
            raise UserError(
                f"bucket {where} does not exist: create it (make infra-up does) or fix runtime.bucket"
            ) from None
        except exceptions.Forbidden as exc:
            raise UserError(
                f"bucket {where} is not writable by this run's account ({first_line(exc)}): "
                "grant it roles/storage.objectAdmin on the bucket (infra/iam.tf)"
            ) from None
        except exceptions.GoogleAPIError as exc:
            raise UserError(f"bucket {where} is not accessible: {first_line(exc)}") from None

    def _upload(self, files: list[Path], root: Path, prefix: str) -> int:
        for path in files:
            self.bucket.blob(f"{prefix}/{path.relative_to(root).as_posix()}").upload_from_filename(str(path))
        log.info("synced %d files to gs://%s/%s", len(files), self.bucket.name, prefix)
        return len(files)

    def upload_checkpoint(self, checkpoint: Path) -> int:
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
        return self._upload(files, checkpoint.parent, self.checkpoint_prefix)

    def upload_run(self, run_dir: Path, skip: str = "checkpoints") -> int:
        files = sorted(
            p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] != skip
        )
        return self._upload(files, run_dir, self.run_prefix)


class CheckpointSyncCallback(TrainerCallback):
    """After each checkpoint save, copy that checkpoint to the bucket (so a lost spot VM loses little)."""

    def __init__(self, sync: BucketSync):
        self.sync = sync

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                self.sync.upload_checkpoint(checkpoint)
