"""The GPU quota preflight: before Terraform applies, read the project's GPU quotas through the Compute
Engine API (the user's own login) and say which offers fit, so a refusal costs one line instead of a
failed apply.

    verdicts = check("my-project", [Need("nvidia-tesla-t4", 1, spot=True, region="us-central1")])
    if not any(v.ok for v in verdicts):
        raise UserError(no_quota_message("my-project", verdicts))

Facts about GCP this module relies on:

- Each region's quotas are `{metric, limit, usage}` in `regions.get`; GPU metrics are per kind, with a
  standard and a preemptible form (`NVIDIA_T4_GPUS`, `PREEMPTIBLE_NVIDIA_T4_GPUS`, ...)
  (https://cloud.google.com/compute/docs/reference/rest/v1/regions/get,
  https://cloud.google.com/compute/resource-usage#gpu_quota). A metric that a region does not list is
  taken as a limit of 0 (the region grants none of that kind).
- Spot VMs use the preemptible quota where it is granted, else the standard one: "To prevent Spot VMs
  from consuming your quotas for standard VMs' CPUs, GPUs, and disks, consider requesting preemptible
  quota" (https://cloud.google.com/compute/docs/instances/create-use-spot). Here a spot need uses
  `PREEMPTIBLE_NVIDIA_<KIND>_GPUS` when its limit in the region is above 0, else `NVIDIA_<KIND>_GPUS`.
- Standard GPUs also count against the project-wide `GPUS_ALL_REGIONS` (`projects.get`), 0 in many new
  projects (https://cloud.google.com/compute/resource-usage#gpu_quota).
- Quota increases are requested on the console's quotas page and reviewed before they are granted
  (https://cloud.google.com/docs/quotas/help/request_increase); how long that takes is not promised (a
  day or more, in experience).

Assumptions (not stated by Google): preemptible GPUs are not counted against GPUS_ALL_REGIONS, so a
need on the preemptible metric is checked against its regional metric only; a spot need refused by the
standard quota it fell back to is best fixed by a preemptible grant (one request, independent of
GPUS_ALL_REGIONS), so its verdict names the preemptible metric.

One `regions.get` per distinct region and at most one `projects.get` per `check`, each with a short
timeout and no retry: the preflight must never hold the user up for long. An answer that cannot be had
raises QuotaUnreadable (the caller warns and goes on without the check); a mistake the user can fix
(the API not enabled, an unknown project or region, a missing permission) raises UserError.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from trainer.errors import UserError
from trainer.gcs import LOGIN_HINT, first_line

TIMEOUT_S = 20.0  # per API call, and per token refresh; no retries
ALL_REGIONS = "GPUS_ALL_REGIONS"
CONSOLE_QUOTAS = "https://console.cloud.google.com/iam-admin/quotas?project={project}"
ENABLE_COMPUTE = "https://console.cloud.google.com/apis/library/compute.googleapis.com?project={project}"
# GCE accelerator type -> the <KIND> of its quota metrics (Quota.Metric of the Compute API).
GPU_KINDS = {
    "nvidia-tesla-t4": "T4",
    "nvidia-tesla-p4": "P4",
    "nvidia-tesla-v100": "V100",
    "nvidia-tesla-p100": "P100",
    "nvidia-l4": "L4",
    "nvidia-tesla-a100": "A100",
    "nvidia-a100-80gb": "A100_80GB",
}


@dataclass(frozen=True)
class Need:
    """The GPUs one offer needs: of `gpu_type`, `gpus` in total (GPUs per VM x VMs), spot or not."""

    gpu_type: str
    gpus: int
    spot: bool
    region: str

    def __post_init__(self) -> None:
        metric(self.gpu_type, self.spot)  # an unknown GPU type is a bug of the caller: fail at once
        if self.gpus < 1:
            raise ValueError(f"a GPU need has at least 1 GPU, not {self.gpus}")


@dataclass(frozen=True)
class Verdict:
    """Whether one need fits, and the quota that decided (`metric`, with its `limit` and `usage`)."""

    need: Need
    ok: bool
    metric: str  # the regional metric that decided, or GPUS_ALL_REGIONS when that one refused
    limit: float
    usage: float
    line: str  # one line for the user
    # (limit, usage) of GPUS_ALL_REGIONS when a need refused by its standard regional metric is short of
    # that one as well: both must be raised before it can run.
    all_regions_short: tuple[float, float] | None = None


class QuotaUnreadable(Exception):
    """The quotas could not be read (network, timeout, the login, a 5xx, an odd answer): the caller warns
    in one line and goes on without the check."""


def metric(gpu_type: str, spot: bool) -> str:
    """The regional quota metric of `gpu_type`: NVIDIA_T4_GPUS, or PREEMPTIBLE_NVIDIA_T4_GPUS for spot."""
    if gpu_type not in GPU_KINDS:
        raise ValueError(f"no quota metric known for GPU type {gpu_type!r} (known: {', '.join(GPU_KINDS)})")
    standard = f"NVIDIA_{GPU_KINDS[gpu_type]}_GPUS"
    return f"PREEMPTIBLE_{standard}" if spot else standard


def check(project: str, needs: list[Need], credentials=None, endpoint: str | None = None) -> list[Verdict]:
    """One verdict per need, in the order of `needs`, from the quotas the Compute Engine API reports now."""
    reader = _Reader(project, credentials, endpoint)
    return [_judge(need, reader) for need in needs]


def no_quota_message(project: str, verdicts: list[Verdict]) -> str:
    """One line for when no offer fits: each quota to request, with the smallest new limit that lets an
    offer run, where to request it, and that a grant takes a while."""
    options: dict[tuple[tuple[str, str], ...], tuple[float, ...]] = {}
    for verdict in verdicts:
        if verdict.ok:
            continue
        request = _request(verdict)
        key = tuple((name, where) for name, where, _ in request)
        limits = tuple(new for _, _, new in request)
        if key not in options or sum(limits) < sum(options[key]):
            options[key] = limits
    if not options:
        return f"no GPU quota to request in project {project}: " + (
            "every offer fits" if verdicts else "no offer"
        )
    choices = [
        " plus ".join(f"{name} >= {_n(new)}{where}" for (name, where), new in zip(key, limits, strict=True))
        for key, limits in options.items()
    ]
    smallest = "each the smallest" if len(choices) > 1 else "the smallest"
    return (
        f"no offer has GPU quota in project {project}: request {', or '.join(choices)} "
        f"({smallest} new limit that lets an offer run) at {CONSOLE_QUOTAS.format(project=project)}, "
        "then run this again (a grant can take a day or more)"
    )


def _request(verdict: Verdict) -> list[tuple[str, str, float]]:
    """(metric, " in <region>" or "", new limit) of each quota to raise before this verdict's need runs."""
    need = verdict.need
    where = "" if verdict.metric == ALL_REGIONS else f" in {need.region}"
    request = [(verdict.metric, where, verdict.usage + need.gpus)]
    if verdict.all_regions_short is not None:
        request.append((ALL_REGIONS, "", verdict.all_regions_short[1] + need.gpus))
    return request


def _judge(need: Need, reader: _Reader) -> Verdict:
    """The rules of the module's docstring: preemptible quota for spot where granted, else the standard
    regional quota and GPUS_ALL_REGIONS; the project is read only when a standard quota is in play."""
    standard = metric(need.gpu_type, False)
    regional = reader.region(need.region)
    if need.spot:
        preemptible = metric(need.gpu_type, True)
        limit, usage = regional.get(preemptible, (0.0, 0.0))
        if limit > 0:
            return _verdict(need, preemptible, need.region, limit, usage)
    limit, usage = regional.get(standard, (0.0, 0.0))
    if limit - usage < need.gpus:
        if need.spot:
            p_limit, p_usage = regional.get(preemptible, (0.0, 0.0))
            spot_note = f" (without it spot VMs use {standard}: limit {_n(limit)}, in use {_n(usage)})"
            return _verdict(need, preemptible, need.region, p_limit, p_usage, spot_note)
        g_limit, g_usage = reader.project().get(ALL_REGIONS, (0.0, 0.0))
        if g_limit - g_usage >= need.gpus:
            return _verdict(need, standard, need.region, limit, usage)
        also = f"; {ALL_REGIONS} too: limit {_n(g_limit)}, in use {_n(g_usage)}"
        verdict = _verdict(need, standard, need.region, limit, usage, also)
        return dataclasses.replace(verdict, all_regions_short=(g_limit, g_usage))
    g_limit, g_usage = reader.project().get(ALL_REGIONS, (0.0, 0.0))
    if g_limit - g_usage < need.gpus:
        return _verdict(need, ALL_REGIONS, f"project {reader.project_id}", g_limit, g_usage)
    note = f" (spot VMs use it while {metric(need.gpu_type, True)} is 0)" if need.spot else ""
    return _verdict(need, standard, need.region, limit, usage, note)


def _verdict(need: Need, name: str, where: str, limit: float, usage: float, note: str = "") -> Verdict:
    fits = limit - usage >= need.gpus
    line = f"{name} in {where}: limit {_n(limit)}, in use {_n(usage)}, this offer needs {need.gpus}{note}"
    return Verdict(need, fits, name, limit, usage, line)


def _n(value: float) -> str:
    """A quota figure as people write it: 1, not 1.0 (nor 1e+06)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


class _Reader:
    """The Compute Engine API for one `check`: each region read once, the project at most once."""

    def __init__(self, project: str, credentials, endpoint: str | None):
        self.project_id = project
        self.credentials = credentials
        self.endpoint = endpoint
        self.regions: dict[str, dict[str, tuple[float, float]]] = {}
        self.project_quotas: dict[str, tuple[float, float]] | None = None

    def region(self, region: str) -> dict[str, tuple[float, float]]:
        if region not in self.regions:
            from google.api_core import exceptions
            from google.cloud import compute_v1

            client = compute_v1.RegionsClient(**self._client_args())
            try:
                answer = self._call(client.get, "compute.regions.get", project=self.project_id, region=region)
            except exceptions.NotFound:
                answer = None
            if answer is None:
                self.project()  # the project's own 404 (or 403) names the project, not the region
                raise UserError(
                    f"region {region} is not a Compute Engine region: check the region (or zone) in the "
                    "tfvars (gcloud compute regions list names them)"
                ) from None
            self.regions[region] = _figures(answer.quotas, f"region {region}")
        return self.regions[region]

    def project(self) -> dict[str, tuple[float, float]]:
        if self.project_quotas is None:
            from google.api_core import exceptions
            from google.cloud import compute_v1

            client = compute_v1.ProjectsClient(**self._client_args())
            try:
                answer = self._call(client.get, "compute.projects.get", project=self.project_id)
            except exceptions.NotFound:
                raise UserError(
                    f"project {self.project_id} not found by the Compute Engine API: check project_id in the "
                    "tfvars"
                ) from None
            self.project_quotas = _figures(answer.quotas, f"project {self.project_id}")
        return self.project_quotas

    def _client_args(self) -> dict:
        if self.credentials is None:
            self.credentials = _default_credentials()
        _refresh(self.credentials)
        args: dict = {"credentials": self.credentials, "transport": "rest"}
        if self.endpoint:
            args["client_options"] = {"api_endpoint": self.endpoint}
        return args

    def _call(self, method, permission: str, **request):
        """One API call, its failures turned into UserError or QuotaUnreadable; NotFound is the caller's."""
        import requests
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions
        from google.protobuf import json_format

        project = self.project_id
        try:
            return method(**request, retry=None, timeout=TIMEOUT_S)
        except exceptions.NotFound:
            raise
        except exceptions.Forbidden as exc:
            raise _forbidden(exc, project, permission) from None
        except exceptions.Unauthorized as exc:
            raise QuotaUnreadable(
                f"the Compute Engine API refused the login ({first_line(exc)}): {LOGIN_HINT}"
            ) from None
        except exceptions.GoogleAPIError as exc:
            code = getattr(exc, "code", None)
            answered = f"answered {code}" if code else "failed"
            raise QuotaUnreadable(f"the Compute Engine API {answered} ({_api_message(exc)})") from None
        except requests.Timeout:
            raise QuotaUnreadable(f"the Compute Engine API did not answer within {_n(TIMEOUT_S)} s") from None
        except requests.RequestException as exc:
            raise QuotaUnreadable(
                f"the Compute Engine API could not be reached ({_network_reason(exc)})"
            ) from None
        except (auth_exceptions.TransportError, auth_exceptions.RefreshError) as exc:
            raise QuotaUnreadable(
                f"the Google login could not be refreshed ({_network_reason(exc)}): {LOGIN_HINT}"
            ) from None
        except (json_format.Error, ValueError, TypeError) as exc:
            raise QuotaUnreadable(f"the Compute Engine API answered oddly ({first_line(exc)})") from None


def _figures(quotas, where: str) -> dict[str, tuple[float, float]]:
    """{metric: (limit, usage)}; an answer without any quota is odd (every region and project lists some)."""
    figures = {quota.metric: (float(quota.limit), float(quota.usage)) for quota in quotas}
    if not figures:
        raise QuotaUnreadable(f"the Compute Engine API listed no quotas for {where}")
    return figures


def _forbidden(exc, project: str, permission: str) -> Exception:
    """A 403: the API not enabled, a missing permission (UserErrors), or something passing (rate limits)."""
    reasons = {getattr(exc, "reason", None) or ""} | {
        e.get("reason", "") for e in (exc.errors or []) if isinstance(e, dict)
    }
    text = first_line(exc)
    if reasons & {"SERVICE_DISABLED", "accessNotConfigured"} or re.search(
        r"has not been used|is disabled", text
    ):
        return UserError(
            f"the Compute Engine API is not enabled in project {project}: enable compute.googleapis.com "
            f"(console: {ENABLE_COMPUTE.format(project=project)}, or gcloud services enable "
            "compute.googleapis.com), then run this again"
        )
    if reasons & {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}:
        return QuotaUnreadable(f"the Compute Engine API is rate-limiting this project ({text})")
    return UserError(
        f"the login may not read the GPU quotas of project {project} ({permission} denied): ask for the role "
        "roles/compute.viewer on the project (it grants compute.regions.get and compute.projects.get), then "
        "run this again"
    )


def _api_message(exc: Exception) -> str:
    """Google's message of an API error, without the "GET <url>: " that the REST client puts first."""
    return re.sub(r"^[A-Z]+ \S+: ", "", first_line(exc))


def _network_reason(exc: Exception) -> str:
    """'Connection refused' out of requests' long ConnectionError text, or its first line."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip() if found else first_line(exc)


def _default_credentials():
    from google.auth.exceptions import DefaultCredentialsError

    from trainer.gcs import default_credentials

    try:
        return default_credentials()[0]
    except DefaultCredentialsError as exc:
        raise QuotaUnreadable(
            f"no Google login to read the quotas with ({first_line(exc)}): {LOGIN_HINT}"
        ) from None


def _refresh(credentials) -> None:
    """Refresh a login that needs it with a short timeout (google-auth's own is 120 s). Credentials that
    still need scopes (a service account key) are left to the client, which signs its own JWT."""
    import functools

    from google.auth import exceptions as auth_exceptions
    from google.auth.transport.requests import Request

    if credentials.valid or getattr(credentials, "requires_scopes", False):
        return
    try:
        credentials.refresh(functools.partial(Request(), timeout=TIMEOUT_S))
    except (auth_exceptions.TransportError, auth_exceptions.RefreshError) as exc:
        raise QuotaUnreadable(
            f"the Google login could not be refreshed ({_network_reason(exc)}): {LOGIN_HINT}"
        ) from None
