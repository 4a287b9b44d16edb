"""Cloud mode: copy checkpoints and artifacts to a GCS bucket (google-cloud-storage).

Credentials come from the environment as usual for Google clients (the VM's service account on GCP,
`GOOGLE_APPLICATION_CREDENTIALS` elsewhere); `STORAGE_EMULATOR_HOST` points the client at an emulator.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from trainer.errors import UserError

log = logging.getLogger(__name__)


def split_bucket_url(url: str) -> tuple[str, str]:
    if not url.startswith("gs://"):
        raise UserError(f"bucket URL must start with gs://, got {url!r}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    return bucket, prefix.strip("/")


def _client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


class BucketSync:
    """Uploads a local folder tree under gs://bucket/prefix/<run name>/, skipping unchanged files."""

    def __init__(self, url: str, run_name: str, client=None):
        bucket_name, prefix = split_bucket_url(url)
        self.client = client or _client()
        self.bucket = self.client.bucket(bucket_name)
        self.prefix = "/".join(p for p in (prefix, "runs", run_name) if p)
        self.url = f"gs://{bucket_name}/{self.prefix}"

    def upload_tree(self, local: Path, root: Path) -> int:
        """Upload every file under `local` (a path inside the run folder `root`). Returns files sent."""
        sent = 0
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            name = f"{self.prefix}/{path.relative_to(root).as_posix()}"
            blob = self.bucket.blob(name)
            blob.upload_from_filename(str(path))
            sent += 1
        log.info("synced %d files from %s to gs://%s/%s", sent, local, self.bucket.name, self.prefix)
        return sent


class CheckpointSyncCallback(TrainerCallback):
    """After each checkpoint save, copy that checkpoint to the bucket (so a lost spot VM loses little)."""

    def __init__(self, sync: BucketSync, run_dir: Path):
        self.sync = sync
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                self.sync.upload_tree(checkpoint, self.run_dir)
