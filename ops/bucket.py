"""The bucket from the laptop: the cloud verbs' credentials check, bucket check and `make fetch`.

One login is all it takes: `gcloud auth application-default login` (or GOOGLE_APPLICATION_CREDENTIALS
naming a key file); the same google-cloud-storage client as the trainer's bucket sync, never the
gcloud CLI. STORAGE_EMULATOR_HOST (the client library's own variable) points it at a GCS emulator.

    python -m trainer.bucket creds                 # load the credentials, name their project
    python -m trainer.bucket check gs://bucket     # the bucket exists and this identity may list it
    python -m trainer.bucket fetch gs://bucket/runs/NAME runs/NAME
    python -m trainer.bucket runs gs://bucket      # every run there: NAME<TAB>STATE<TAB>COST-USD

Every mistake ends in one `error: ...` line and exit status 2. Only the objects' own permissions
are used (storage.objects.list/get), never bucket metadata (storage.buckets.get), so a person with
an object role on the bucket can fetch as well as the project's owner.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from trainer.errors import UserError

# The bucket's layout (trainer.storage.BucketSync writes it, the Terraform lifecycle rule and these verbs
# read it): finished runs' artifacts under runs/<run>/ (kept), checkpoints under checkpoints/<run>/.
RUNS = "runs"
CHECKPOINTS = "checkpoints"
LOGIN_HINT = "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"


def split_bucket_url(url: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not url.startswith("gs://"):
        raise UserError(f"bucket URL must start with gs://, got {url!r}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    if not bucket:
        raise UserError(f"bucket URL has no bucket name: {url!r}")
    return bucket, prefix.strip("/")


def client():
    """A google-cloud-storage client: application-default credentials, or an emulator's anonymous
    access when STORAGE_EMULATOR_HOST is set."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, project = google.auth.default()
    except DefaultCredentialsError as exc:
        raise UserError(f"no usable Google credentials ({first_line(exc)}): {LOGIN_HINT}") from None
    # A user's login names no project (only a quota project); calls on one bucket need none.
    project = (
        project or getattr(credentials, "quota_project_id", None) or os.environ.get("GOOGLE_CLOUD_PROJECT")
    )
    return storage.Client(project=project or "no-project-needed", credentials=credentials)


def load_credentials() -> tuple[str, str | None]:
    """Really load the application-default credentials (google.auth.default): (kind, project)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    try:
        credentials, project = google.auth.default()
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


def first_line(exc: Exception) -> str:
    """A Google API error in one line: GCS's own message when the text carries its JSON body."""
    text = str(getattr(exc, "message", None) or exc).strip()
    found = re.search(r'"message": "((?:[^"\\]|\\.)*)"', text)
    if found:
        return found.group(1)
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


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


def list_runs(url: str, gcs=None) -> list[tuple[str, str, str]]:
    """(run, state, estimated cost in USD or '-') of every run in the bucket: finished when its manifest
    is there (the cost is the manifest's), interrupted when only checkpoints are (make watch, or make train
    MODE=cloud RUN=<run> again, resumes it)."""
    import json

    from google.api_core import exceptions

    from trainer.run_folder import MANIFEST  # written last: the "finished" marker

    name, prefix = split_bucket_url(url)
    base = f"{prefix}/" if prefix else ""
    gcs = gcs or client()
    rows: dict[str, tuple[str, str, str]] = {}
    try:
        for run in _folders(gcs, name, base + CHECKPOINTS):
            rows[run] = (run, "interrupted", "-")
        for run in _folders(gcs, name, base + RUNS):
            blob = gcs.bucket(name).blob(f"{base}{RUNS}/{run}/{MANIFEST}")
            try:
                manifest = json.loads(blob.download_as_bytes())
            except exceptions.NotFound:
                continue  # artifacts without a manifest: not finished
            except ValueError:
                manifest = {}
            cost = manifest.get("estimated_cost_usd") if isinstance(manifest, dict) else None
            rows[run] = (run, "finished", "-" if cost is None else str(cost))
    except exceptions.GoogleAPIError as exc:
        raise _api_error(exc, name, "list its objects") from None
    return [rows[run] for run in sorted(rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.bucket", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("creds", help="load the application-default credentials and name their project")
    check = verbs.add_parser("check", help="the bucket exists and may be listed")
    check.add_argument("url")
    get = verbs.add_parser("fetch", help="copy gs://bucket/prefix/ to a new local folder")
    get.add_argument("url")
    get.add_argument("dest", type=Path)
    runs = verbs.add_parser("runs", help="every run in the bucket: name, state, cost (tab-separated)")
    runs.add_argument("url")
    args = parser.parse_args(argv)
    try:
        if args.verb == "creds":
            # A login on this machine is what counts, not a GCE metadata server: no probe of
            # 169.254.169.254 (google-auth's own switch; NO_GCE_CHECK=false on a GCE workstation).
            os.environ.setdefault("NO_GCE_CHECK", "true")
            kind, project = load_credentials()
            print(f"credentials: {kind}, project {project or '(none set: gcloud config set project ...)'}")
        elif args.verb == "check":
            check_bucket(args.url)
        elif args.verb == "runs":
            for row in list_runs(args.url):
                print("\t".join(row))
        else:
            count = fetch(args.url.rstrip("/"), args.dest)
            print(f"fetch: {args.dest} ({count} files from {args.url.rstrip('/')}/)")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
