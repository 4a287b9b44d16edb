"""The bucket from the laptop: the credentials check, the bucket checks, the runs listing and `make fetch`.

One login is all it takes: `gcloud auth application-default login` (or GOOGLE_APPLICATION_CREDENTIALS
naming a key file); the same google-cloud-storage client as the trainer's bucket sync (trainer.gcs, which
owns the bucket's layout), never the gcloud CLI. STORAGE_EMULATOR_HOST (the client library's own variable)
points it at a GCS emulator. Only the objects' own permissions are used (storage.objects.list/get), never
bucket metadata (storage.buckets.get), so a person with an object role on the bucket can fetch as well as
the project's owner.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from trainer import run_state
from trainer.errors import UserError
from trainer.gcs import (
    CHECKPOINTS,
    LOGIN_HINT,
    RUNS,
    client,
    default_credentials,
    first_line,
    run_prefix,
    split_bucket_url,
)


def load_credentials() -> tuple[str, str | None]:
    """Really load the application-default credentials (google.auth.default): (kind, project)."""
    from google.auth.exceptions import DefaultCredentialsError

    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    try:
        credentials, project = default_credentials()
    except DefaultCredentialsError as exc:
        if named:
            raise UserError(
                f"GOOGLE_APPLICATION_CREDENTIALS={named}: {first_line(exc)}; {LOGIN_HINT}"
            ) from None
        if shutil.which("gcloud"):
            raise UserError(
                "gcloud has no application-default credentials: run 'gcloud auth application-default login'"
            ) from None
        raise UserError(
            "no Google Cloud credentials: install the gcloud CLI (https://cloud.google.com/sdk/docs/install)"
            " and run 'gcloud auth application-default login', or set GOOGLE_APPLICATION_CREDENTIALS"
            " to a key file"
        ) from None
    project = project or getattr(credentials, "quota_project_id", None)
    email = getattr(credentials, "service_account_email", None)
    return (f"service account {email}" if email else "user login"), project


def _api_error(exc: Exception, bucket: str, action: str) -> UserError:
    from google.api_core import exceptions

    if isinstance(exc, exceptions.NotFound):
        return UserError(
            f"bucket gs://{bucket} does not exist: create it (make infra-up does) or fix the URL"
        )
    if isinstance(exc, exceptions.Forbidden):
        return UserError(f"bucket gs://{bucket}: not allowed to {action} ({first_line(exc)})")
    return UserError(f"bucket gs://{bucket}: cannot {action} ({first_line(exc)})")


def check_bucket(url: str, gcs=None) -> None:
    """The bucket exists and may be listed (storage.objects.list: no bucket metadata is read)."""
    from google.api_core import exceptions

    name, prefix = split_bucket_url(url)
    gcs = gcs or client()
    try:
        next(iter(gcs.list_blobs(name, prefix=prefix or None, max_results=1)), None)
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "list its objects") from None


def fetch(url: str, dest: Path, gcs=None) -> int:
    """Copy every object under gs://bucket/prefix/ to dest/ (which must not hold anything yet).

    Downloads go to a scratch folder beside dest first, so a failure leaves nothing half-written."""
    from google.api_core import exceptions

    name, prefix = split_bucket_url(url)
    if not prefix:
        raise UserError(f"{url}: name a folder in the bucket, not the whole bucket")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} already exists and is not empty: move it away first (nothing was fetched)")
    gcs = gcs or client()
    base = prefix + "/"
    try:
        blobs = [b for b in gcs.list_blobs(name, prefix=base) if not b.name.endswith("/")]
        if not blobs:
            raise UserError(
                f"nothing under {url}/: is the run name right? (runs are listed under gs://{name}/runs/)"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
        try:
            for blob in blobs:
                target = scratch / blob.name[len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                blob.download_to_filename(str(target))
            if dest.exists():
                dest.rmdir()  # empty (checked above)
            scratch.rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "read its objects") from None
    return len(blobs)


def _folders(gcs, bucket: str, prefix: str) -> list[str]:
    """The names of the "folders" directly under prefix/ (objects.list with a delimiter)."""
    found = gcs.list_blobs(bucket, prefix=f"{prefix}/", delimiter="/")
    for _ in found:  # the prefixes are known once the pages are read
        pass
    return sorted(p[len(prefix) + 1 :].rstrip("/") for p in found.prefixes)


def _manifests(gcs, bucket: str, prefix: str) -> dict[str, dict | None]:
    """{run: its manifest, None where it does not read as a JSON object} of every run folder in the bucket
    that holds a manifest.json (a folder of artifacts without one is not finished)."""
    from google.api_core import exceptions

    found: dict[str, dict | None] = {}
    for run in _folders(gcs, bucket, (f"{prefix}/" if prefix else "") + RUNS):
        for record in (run_state.MANIFEST, run_state.STUDY):  # a study of make tune: its study.json
            blob = gcs.bucket(bucket).blob(f"{run_prefix(prefix, run)}/{record}")
            try:
                manifest = json.loads(blob.download_as_bytes())
            except exceptions.NotFound:
                continue
            except ValueError:
                manifest = None
            found[run] = manifest if isinstance(manifest, dict) else None
            break
    return found


def runs_with_manifests(url: str, gcs=None) -> dict[str, dict | None]:
    """{run: its manifest ({} where it is unreadable), or None where the bucket holds only checkpoints}
    of every run in the bucket: finished with a manifest, interrupted (resumable) with checkpoints only."""
    from google.api_core import exceptions

    name, prefix = split_bucket_url(url)
    gcs = gcs or client()
    try:
        rows: dict[str, dict | None] = dict.fromkeys(
            _folders(gcs, name, (f"{prefix}/" if prefix else "") + CHECKPOINTS)
        )
        rows.update({run: manifest or {} for run, manifest in _manifests(gcs, name, prefix).items()})
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "list its objects") from None
    return dict(sorted(rows.items()))


def list_runs(url: str, gcs=None) -> dict[str, tuple[str, str]]:
    """{run: (state, estimated cost in USD or '-')} of every run in the bucket: finished when its manifest
    is there (the cost is the manifest's), interrupted when only checkpoints are (make watch, or make train
    MODE=cloud RUN=<run> again, resumes it)."""
    return {
        run: (run_state.state_of(manifest) if manifest is not None else run_state.INTERRUPTED,
              run_state.cost(manifest))
        for run, manifest in runs_with_manifests(url, gcs).items()
    }  # fmt: skip


def manifest_exists(url: str, run: str, gcs=None) -> bool:
    """Whether gs://bucket[/prefix]/runs/RUN/manifest.json is there (objects.list only: no bucket
    metadata)."""
    from google.api_core import exceptions

    name, prefix = split_bucket_url(url)
    path = f"{run_prefix(prefix, run)}/{run_state.MANIFEST}"
    gcs = gcs or client()
    try:
        return any(blob.name == path for blob in gcs.list_blobs(name, prefix=path, max_results=1))
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "list its objects") from None


def manifest_url(url: str, run: str) -> str:
    name, prefix = split_bucket_url(url)
    return f"gs://{name}/{run_prefix(prefix, run)}/{run_state.MANIFEST}"


def finished_manifests(url: str, gcs=None) -> dict[str, dict]:
    """{run: manifest} of every finished run in the bucket (its manifest is there and reads as JSON)."""
    from google.api_core import exceptions

    name, prefix = split_bucket_url(url)
    gcs = gcs or client()
    try:
        return {run: m for run, m in _manifests(gcs, name, prefix).items() if m is not None}
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "list its objects") from None
