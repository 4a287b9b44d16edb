"""The bucket's layout and its client: one owner, on the VM side (the trainer's bucket sync writes this
layout; the Terraform lifecycle rule and the laptop's verbs, `ops`, read it through this module).

    gs://bucket[/prefix]/runs/<run>/          a run's artifacts, manifest.json last (kept)
    gs://bucket[/prefix]/checkpoints/<run>/   its checkpoints while it trains (deleted by age)

Light on purpose (the Google client is imported when a client is made): the laptop imports it per verb.
"""

from __future__ import annotations

import os
import re

from trainer.errors import UserError

RUNS = "runs"
CHECKPOINTS = "checkpoints"
# A bucket URL with an optional prefix (GCS bucket names: 3-222 characters of a-z 0-9 . _ -).
BUCKET_URL = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?")
LOGIN_HINT = "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"


def split_bucket_url(url: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not url.startswith("gs://"):
        raise UserError(f"bucket URL must start with gs://, got {url!r}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    if not bucket:
        raise UserError(f"bucket URL has no bucket name: {url!r}")
    return bucket, prefix.strip("/")


def run_prefix(prefix: str, run: str) -> str:
    """Where a run's artifacts live in the bucket (under the bucket URL's own prefix, if any)."""
    return f"{prefix}/{RUNS}/{run}" if prefix else f"{RUNS}/{run}"


def checkpoint_prefix(prefix: str, run: str) -> str:
    """Where a run's checkpoints live in the bucket."""
    return f"{prefix}/{CHECKPOINTS}/{run}" if prefix else f"{CHECKPOINTS}/{run}"


def client():
    """A google-cloud-storage client: application-default credentials, or an emulator's anonymous
    access when STORAGE_EMULATOR_HOST is set."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, project = default_credentials()
    except DefaultCredentialsError as exc:
        raise UserError(f"no usable Google credentials ({first_line(exc)}): {LOGIN_HINT}") from None
    # A user's login names no project (only a quota project); calls on one bucket need none.
    project = (
        project or getattr(credentials, "quota_project_id", None) or os.environ.get("GOOGLE_CLOUD_PROJECT")
    )
    return storage.Client(project=project or "no-project-needed", credentials=credentials)


def default_credentials():
    """google.auth.default(), except for a login made with `gcloud auth application-default login`: its file
    is read directly, so no `gcloud config config-helper` runs to look for a project (the laptop's verbs
    start nothing but ssh, terraform and ansible-playbook; the login's quota project names the project)."""
    import google.auth
    from google.auth import _cloud_sdk

    well_known = _cloud_sdk.get_application_default_credentials_path()
    if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") and os.path.isfile(well_known):
        return google.auth.load_credentials_from_file(well_known)
    return google.auth.default()


def first_line(exc: Exception) -> str:
    """A Google API error in one line: GCS's own message when the text carries its JSON body."""
    text = str(getattr(exc, "message", None) or exc).strip()
    found = re.search(r'"message": "((?:[^"\\]|\\.)*)"', text)
    if found:
        return found.group(1)
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__
