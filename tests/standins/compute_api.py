"""A stand-in Compute Engine API (regions.get and projects.get) on the loopback GoogleAPI, answering with
quotas that a test sets; the real google-cloud-compute client talks to it over REST, with a real login.

    def test_something(stand_in_compute, tmp_path):
        compute = stand_in_compute                          # project "stand-in-project" exists
        compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=1, usage=0)
        compute.set_project_quota("GPUS_ALL_REGIONS", limit=1, usage=0)
        credentials = compute.credentials(tmp_path)         # a service account key whose JWT it accepts
        quota.check("stand-in-project", needs, credentials=credentials, endpoint=compute.url)
        compute.requests                                    # [("GET", "/compute/v1/projects/..."), ...]

`stand_in_compute` (a function-scoped fixture defined here, closed after the test) is imported by the test
modules that use it, or by a conftest.py, as tests/infra/conftest.py does with tf_harness's fixture:
`from tests.standins.compute_api import stand_in_compute  # noqa: F401`.

What it answers, as Compute Engine does (https://cloud.google.com/compute/docs/reference/rest/v1/regions/get,
.../v1/projects/get):

- `GET /compute/v1/projects/{project}/regions/{region}`: a Region (`kind`, `id`, `name`, `description`,
  `status: "UP"`, `zones` as URLs, `quotas` of `{metric, limit, usage}`, `selfLink`). Known regions: the
  common GPU regions of GPU_REGIONS, and any region a test set a quota in. A region's quotas are the
  non-GPU defaults of REGION_QUOTAS plus what the test set: no GPU metric unless set.
- `GET /compute/v1/projects/{project}`: a Project whose quotas are PROJECT_QUOTAS (GPUS_ALL_REGIONS 0, as
  in a new project) plus what the test set.
- Errors in Compute's own shape (`code`, `message`, `errors[{message, domain, reason}]`): 404 notFound for
  an unknown project or region; for a project in `api_disabled`, 403 accessNotConfigured with the
  ErrorInfo reason SERVICE_DISABLED that Google's API front end adds; for a project in `denied`, 403
  forbidden "Required 'compute.regions.get' permission for ..."; `fail_with(code, status, message)` makes
  every call answer that error (a 503, a 429).

Cannot see: IAM beyond the one `denied` switch, quota kinds per zone, the API's rate limits, real project
numbers.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.standins.google_api import GoogleAPI, error, key_file

PROJECT = "stand-in-project"
COMPUTE = "https://www.googleapis.com/compute/v1"
# Common GPU regions and their zones' letters (gcloud compute regions list, 2026).
GPU_REGIONS = {
    "us-central1": "abcf",
    "us-east1": "bcd",
    "us-east4": "abc",
    "us-west1": "abc",
    "us-west4": "abc",
    "europe-west1": "bcd",
    "europe-west4": "abc",
    "asia-east1": "abc",
    "asia-southeast1": "abc",
}
# What every region lists without a test's help: a new project's CPU, disk and address quotas.
REGION_QUOTAS = {
    "CPUS": (24.0, 0.0),
    "DISKS_TOTAL_GB": (4096.0, 0.0),
    "SSD_TOTAL_GB": (500.0, 0.0),
    "IN_USE_ADDRESSES": (8.0, 0.0),
    "INSTANCES": (960.0, 0.0),
    "PREEMPTIBLE_CPUS": (0.0, 0.0),
}
PROJECT_QUOTAS = {
    "GPUS_ALL_REGIONS": (0.0, 0.0),
    "CPUS_ALL_REGIONS": (32.0, 0.0),
    "FIREWALLS": (200.0, 0.0),
    "NETWORKS": (5.0, 0.0),
}


def compute_error(code: int, message: str, reason: str, domain: str = "global") -> dict:
    """An error body as Compute Engine writes it (no google.rpc status or details)."""
    return {"error": {"code": code, "message": message, "errors": [
        {"message": message, "domain": domain, "reason": reason},
    ]}}  # fmt: skip


class StandInCompute:
    """regions.get and projects.get of the projects in `projects`, with the quotas a test sets."""

    def __init__(self, project: str = PROJECT):
        self.api = GoogleAPI()
        self.projects: set[str] = {project}
        self.api_disabled: set[str] = set()  # projects where compute.googleapis.com is not enabled
        self.denied: set[str] = set()  # projects where the login lacks compute.*.get
        self.failure: tuple[int, dict] | None = None
        self.region_quotas: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
        self.project_quotas: dict[str, dict[str, tuple[float, float]]] = {}
        self.default_project = project
        self.api.route(
            "GET", r"/compute/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)", self._region
        )
        self.api.route("GET", r"/compute/v1/projects/(?P<project>[^/]+)", self._project)

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.api.requests

    def set_quota(self, region: str, metric: str, limit: float, usage: float = 0, project: str = "") -> None:
        """A regional quota (and the region, if it was not known)."""
        key = (project or self.default_project, region)
        self.region_quotas.setdefault(key, {})[metric] = (float(limit), float(usage))

    def set_project_quota(self, metric: str, limit: float, usage: float = 0, project: str = "") -> None:
        self.project_quotas.setdefault(project or self.default_project, {})[metric] = (
            float(limit),
            float(usage),
        )

    def fail_with(self, code: int, status: str, message: str) -> None:
        """Every later API call answers this error (a Google JSON error with `status`)."""
        self.failure = (code, error(code, status, message))

    def credentials(self, folder: Path):
        """A service account login (from a key file in `folder`) that this stand-in accepts."""
        from google.oauth2 import service_account

        path = key_file(folder / "compute-key.json", self.api, self.default_project)
        return service_account.Credentials.from_service_account_file(str(path))

    def close(self) -> None:
        self.api.close()

    def _refusal(self, project: str, permission: str, resource: str) -> tuple[int, Any] | None:
        if self.failure:
            return self.failure
        if project not in self.projects:
            return 404, compute_error(404, f"The resource 'projects/{project}' was not found", "notFound")
        if project in self.api_disabled:
            return 403, _service_disabled(project)
        if project in self.denied:
            message = f"Required '{permission}' permission for '{resource}'"
            return 403, compute_error(403, message, "forbidden")
        return None

    def _region(self, match, query) -> tuple[int, Any]:
        project, region = match["project"], match["region"]
        resource = f"projects/{project}/regions/{region}"
        refused = self._refusal(project, "compute.regions.get", resource)
        if refused:
            return refused
        set_here = self.region_quotas.get((project, region))
        if region not in GPU_REGIONS and set_here is None:
            return 404, compute_error(404, f"The resource '{resource}' was not found", "notFound")
        quotas = {**REGION_QUOTAS, **(set_here or {})}
        return 200, {
            "kind": "compute#region",
            "id": str(1000 + zlib.crc32(region.encode()) % 9000),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": region,
            "description": region,
            "status": "UP",
            "zones": [
                f"{COMPUTE}/projects/{project}/zones/{region}-{z}" for z in GPU_REGIONS.get(region, "abc")
            ],
            "quotas": [{"metric": m, "limit": limit, "usage": usage} for m, (limit, usage) in quotas.items()],
            "selfLink": f"{COMPUTE}/{resource}",
            "supportsPzs": False,
        }

    def _project(self, match, query) -> tuple[int, Any]:
        project = match["project"]
        refused = self._refusal(project, "compute.projects.get", f"projects/{project}")
        if refused:
            return refused
        quotas = {**PROJECT_QUOTAS, **self.project_quotas.get(project, {})}
        return 200, {
            "kind": "compute#project",
            "id": str(_number(project)),
            "creationTimestamp": "2026-01-05T09:00:00.000-08:00",
            "name": project,
            "quotas": [{"metric": m, "limit": limit, "usage": usage} for m, (limit, usage) in quotas.items()],
            "selfLink": f"{COMPUTE}/projects/{project}",
            "defaultServiceAccount": f"{_number(project)}-compute@developer.gserviceaccount.com",
            "defaultNetworkTier": "PREMIUM",
        }


def _number(project: str) -> int:
    """A project number of 12 digits, the same for a name every time."""
    return 100000000000 + zlib.crc32(project.encode())


def _service_disabled(project: str) -> dict:
    """Google's answer when compute.googleapis.com is not enabled in the project."""
    number = _number(project)
    overview = (
        f"https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project={number}"
    )
    message = (
        f"Compute Engine API has not been used in project {number} before or it is disabled. Enable it by "
        f"visiting {overview} then retry. If you enabled this API recently, wait a few minutes for the "
        "action to propagate to our systems and retry."
    )
    body = compute_error(403, message, "accessNotConfigured", domain="usageLimits")
    body["error"]["errors"][0]["extendedHelp"] = overview
    body["error"]["status"] = "PERMISSION_DENIED"
    body["error"]["details"] = [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
        "metadata": {"service": "compute.googleapis.com", "consumer": f"projects/{number}"},
    }]  # fmt: skip
    return body


@pytest.fixture
def stand_in_compute():
    """A StandInCompute for one test (project "stand-in-project"), closed after it."""
    compute = StandInCompute()
    yield compute
    compute.close()
