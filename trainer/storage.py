"""GCS: read data from gs:// URLs; in cloud mode, copy checkpoints and artifacts to a bucket.

Credentials come from the environment as usual for Google clients (the VM's service account on GCP,
application-default credentials elsewhere); `STORAGE_EMULATOR_HOST` points the client at an emulator.
The VM's account holds only roles/storage.objectAdmin on the bucket (infra/iam.tf): object calls,
never bucket metadata (storage.buckets.get), so nothing here calls bucket.exists() or get_bucket().
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer import checkpoints
from trainer.errors import UserError
from trainer.gcs import checkpoint_prefix, first_line, run_prefix, split_bucket_url
from trainer.gcs import client as _client

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
    """Copies a run to the bucket in trainer.gcs's layout (which the Terraform lifecycle rule and the
    laptop's verbs read): checkpoints under .../checkpoints/<run>/, everything else under .../runs/<run>/."""

    def __init__(self, url: str, run_name: str, client=None):
        bucket_name, prefix = split_bucket_url(url)
        self.client = client or _client()
        self.bucket = self.client.bucket(bucket_name)
        self.run_prefix = run_prefix(prefix, run_name)
        self.checkpoint_prefix = checkpoint_prefix(prefix, run_name)
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

    def upload_checkpoint(self, checkpoint: Path, attempts: Path | None = None) -> int:
        """A complete checkpoint (its completion marker written) to the bucket, the marker last: a copy
        cut off mid-upload has no marker and is never restored. `attempts` (the run's attempts record)
        goes beside it, so a run resumed on a new disk still counts every attempt."""
        if not checkpoints.is_complete(checkpoint):
            log.warning("not syncing %s: %s", checkpoint.name, checkpoints.problem(checkpoint))
            return 0
        started = time.monotonic()
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != checkpoints.MARKER)
        count = self._upload(
            [*files, checkpoint / checkpoints.MARKER], checkpoint.parent, self.checkpoint_prefix
        )
        if attempts is not None and attempts.is_file():
            self.bucket.blob(f"{self.checkpoint_prefix}/{attempts.name}").upload_from_filename(str(attempts))
        log.info(
            "%s is in gs://%s/%s (%.1f s)",
            checkpoint.name,
            self.bucket.name,
            self.checkpoint_prefix,
            time.monotonic() - started,
        )
        return count

    def upload_run(self, run_dir: Path, skip: str = "checkpoints") -> int:
        files = sorted(
            p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] != skip
        )
        return self._upload(files, run_dir, self.run_prefix)

    # ------------------------------------------------------------------ resuming from the bucket

    def _checkpoint_blobs(self) -> dict[int, dict[str, Any]]:
        """The bucket's checkpoints of this run: step -> {path inside the checkpoint: blob}."""
        found: dict[int, dict[str, Any]] = {}
        base = self.checkpoint_prefix + "/"
        for blob in self.client.list_blobs(self.bucket, prefix=base):
            folder, _, inner = blob.name[len(base) :].partition("/")
            step = checkpoints.step_of(Path(folder))
            if step is not None and inner:
                found.setdefault(step, {})[inner] = blob
        return found

    def _download(self, step: int, blobs: dict[str, Any], checkpoints_dir: Path) -> Path | None:
        """checkpoint-<step> from the bucket into checkpoints_dir, whole or not at all: the files its
        marker lists go to a hidden scratch folder, which becomes the checkpoint once it checks out."""
        name = f"checkpoint-{step}"
        where = f"gs://{self.bucket.name}/{self.checkpoint_prefix}/{name}"
        if checkpoints.MARKER not in blobs:
            log.warning("skipping %s: no completion marker (cut off mid-upload)", where)
            return None
        scratch = checkpoints_dir / f".restore-{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            blobs[checkpoints.MARKER].download_to_filename(str(scratch / checkpoints.MARKER))
            listed = checkpoints.read_marker(scratch)
            missing = sorted(set(listed) - set(blobs))
            if missing:
                log.warning("skipping %s: %s is not in the bucket", where, missing[0])
                return None
            for inner in listed:
                (scratch / inner).parent.mkdir(parents=True, exist_ok=True)
                blobs[inner].download_to_filename(str(scratch / inner))
            why = checkpoints.problem(scratch)
            if why:
                log.warning("skipping %s: %s", where, why)
                return None
            target = checkpoints_dir / name
            shutil.rmtree(target, ignore_errors=True)
            scratch.rename(target)
            return target
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", where, exc)
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def restore(
        self, checkpoints_dir: Path, attempts: Path | None = None, step: int | None = None
    ) -> Path | None:
        """For a run with no checkpoint on this disk (a new disk, another zone): the newest complete
        checkpoint in the bucket (or the one at `step`: the one the other machines of the run resume
        from), and the best one it names (the run ends by loading the best model), downloaded into
        `checkpoints_dir`; the attempts record too, when `attempts` does not exist yet.
        Returns the restored checkpoint, None when the bucket has no complete one."""
        from google.api_core import exceptions

        started = time.monotonic()
        try:
            by_step = self._checkpoint_blobs()
            newest = None
            for found in [step] if step is not None else sorted(by_step, reverse=True):
                newest = self._download(found, by_step[found], checkpoints_dir) if found in by_step else None
                if newest:
                    break
            if newest is None:
                return None
            best = _best_step(newest)
            if best is not None and best != checkpoints.step_of(newest) and best in by_step:
                self._download(best, by_step[best], checkpoints_dir)
            record = self.bucket.blob(f"{self.checkpoint_prefix}/{attempts.name}") if attempts else None
            if attempts is not None and not attempts.exists() and record is not None:
                try:
                    record.download_to_filename(str(attempts))
                except exceptions.NotFound:
                    attempts.unlink(missing_ok=True)
        except exceptions.GoogleAPIError as exc:
            raise UserError(
                f"cannot read the run's checkpoints in gs://{self.bucket.name}/{self.checkpoint_prefix}: "
                f"{first_line(exc)}"
            ) from None
        log.info(
            "restored %s from gs://%s/%s in %.1f s",
            newest.name,
            self.bucket.name,
            self.checkpoint_prefix,
            time.monotonic() - started,
        )
        return newest


def _best_step(checkpoint: Path) -> int | None:
    """The step of the best checkpoint that `checkpoint`'s trainer state names, if any."""
    try:
        state = json.loads((checkpoint / checkpoints.TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    best = state.get("best_model_checkpoint") if isinstance(state, dict) else None
    return checkpoints.step_of(Path(best)) if best else None


class CheckpointSyncCallback(TrainerCallback):
    """After each checkpoint save (and its completion marker), copy that checkpoint to the bucket, so a
    lost spot VM loses little; `attempts` is the run's attempts record, copied beside it."""

    def __init__(self, sync: BucketSync, attempts: Path | None = None):
        self.sync = sync
        self.attempts = attempts

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                self.sync.upload_checkpoint(checkpoint, self.attempts)
