"""The GPU quota preflight (ops/quota.py) against the stand-in Compute Engine API, with the real
google-cloud-compute client over REST and a real login: which metric decides, what is asked of the API,
the one-line errors, and the one-line advice when no offer fits."""

from __future__ import annotations

import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from ops import quota
from ops.quota import Need, QuotaUnreadable, Verdict
from tests.standins.compute_api import PROJECT, stand_in_compute  # noqa: F401 (a fixture: pytest finds it here)
from trainer.errors import UserError

CONSOLE = f"https://console.cloud.google.com/iam-admin/quotas?project={PROJECT}"
T4_SPOT = Need("nvidia-tesla-t4", 1, spot=True, region="us-central1")
T4 = Need("nvidia-tesla-t4", 1, spot=False, region="us-central1")
L4 = Need("nvidia-l4", 1, spot=False, region="us-central1")


@pytest.fixture
def compute(stand_in_compute, tmp_path):  # noqa: F811 (the fixture imported above)
    """The stand-in, and `compute.check(needs)`: quota.check on it with its own login."""
    credentials = stand_in_compute.credentials(tmp_path)
    stand_in_compute.check = lambda needs, project=PROJECT: quota.check(
        project, needs, credentials=credentials, endpoint=stand_in_compute.url
    )
    return stand_in_compute


def regions_get(region: str, project: str = PROJECT) -> tuple[str, str]:
    return ("GET", f"/compute/v1/projects/{project}/regions/{region}")


PROJECTS_GET = ("GET", f"/compute/v1/projects/{PROJECT}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metric_names_standard_and_preemptible():
    assert {gpu: quota.metric(gpu, False) for gpu in quota.GPU_KINDS} == {
        "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
        "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
        "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
        "nvidia-tesla-p100": "NVIDIA_P100_GPUS",
        "nvidia-l4": "NVIDIA_L4_GPUS",
        "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
        "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
    }
    assert quota.metric("nvidia-a100-80gb", True) == "PREEMPTIBLE_NVIDIA_A100_80GB_GPUS"
    assert quota.metric("nvidia-tesla-t4", True) == "PREEMPTIBLE_NVIDIA_T4_GPUS"
    with pytest.raises(ValueError, match="nvidia-h100"):
        quota.metric("nvidia-h100", False)
    with pytest.raises(ValueError, match="at least 1 GPU"):
        Need("nvidia-l4", 0, spot=False, region="us-central1")


def test_the_metric_names_are_the_compute_apis_own():
    from google.cloud import compute_v1

    known = {m.name for m in compute_v1.Quota.Metric}
    names = {quota.metric(gpu, spot) for gpu in quota.GPU_KINDS for spot in (False, True)}
    assert names <= known and quota.ALL_REGIONS in known


def test_spot_uses_the_preemptible_quota_when_granted_and_never_reads_the_project(compute):
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=2, usage=1)
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=0)
    [verdict] = compute.check([T4_SPOT])
    assert verdict == Verdict(
        T4_SPOT, True, "PREEMPTIBLE_NVIDIA_T4_GPUS", 2.0, 1.0,
        "PREEMPTIBLE_NVIDIA_T4_GPUS in us-central1: limit 2, in use 1, this offer needs 1",
    )  # fmt: skip
    assert compute.requests == [regions_get("us-central1")]


def test_granted_preemptible_quota_decides_even_when_it_is_short(compute):
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=1, usage=1)
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=8)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=8)
    [verdict] = compute.check([T4_SPOT])
    assert (verdict.ok, verdict.metric, verdict.limit, verdict.usage) == (
        False, "PREEMPTIBLE_NVIDIA_T4_GPUS", 1.0, 1.0,
    )  # fmt: skip


def test_spot_without_preemptible_quota_uses_the_standard_one_and_gpus_all_regions(compute):
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=0)
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=1)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=1)
    [verdict] = compute.check([T4_SPOT])
    assert verdict == Verdict(
        T4_SPOT, True, "NVIDIA_T4_GPUS", 1.0, 0.0,
        "NVIDIA_T4_GPUS in us-central1: limit 1, in use 0, this offer needs 1 "
        "(spot VMs use it while PREEMPTIBLE_NVIDIA_T4_GPUS is 0)",
    )  # fmt: skip
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=0)
    [verdict] = compute.check([T4_SPOT])
    assert (verdict.ok, verdict.metric) == (False, "GPUS_ALL_REGIONS")


def test_spot_refused_by_the_standard_quota_names_the_preemptible_one_to_request(compute):
    # The region lists no preemptible T4 metric at all: that counts as a limit of 0.
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=0)
    [verdict] = compute.check([T4_SPOT])
    assert verdict == Verdict(
        T4_SPOT, False, "PREEMPTIBLE_NVIDIA_T4_GPUS", 0.0, 0.0,
        "PREEMPTIBLE_NVIDIA_T4_GPUS in us-central1: limit 0, in use 0, this offer needs 1 "
        "(without it spot VMs use NVIDIA_T4_GPUS: limit 0, in use 0)",
    )  # fmt: skip


def test_gpus_all_regions_refuses_a_standard_need_that_its_region_allows(compute):
    compute.set_quota("us-central1", "NVIDIA_L4_GPUS", limit=4)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=2, usage=2)
    [verdict] = compute.check([L4])
    assert verdict == Verdict(
        L4, False, "GPUS_ALL_REGIONS", 2.0, 2.0,
        f"GPUS_ALL_REGIONS in project {PROJECT}: limit 2, in use 2, this offer needs 1",
    )  # fmt: skip


def test_usage_counts_against_the_limit(compute):
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=4, usage=3)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=16, usage=3)
    one, two = T4, Need("nvidia-tesla-t4", 2, spot=False, region="us-central1")
    fits, short = compute.check([one, two])
    assert (fits.ok, fits.line) == (
        True,
        "NVIDIA_T4_GPUS in us-central1: limit 4, in use 3, this offer needs 1",
    )
    assert (short.ok, short.metric, short.limit, short.usage) == (False, "NVIDIA_T4_GPUS", 4.0, 3.0)
    assert short.all_regions_short is None


def test_a_need_short_of_both_its_regional_and_the_global_quota_says_both(compute):
    compute.set_quota("us-central1", "NVIDIA_L4_GPUS", limit=0)
    [verdict] = compute.check([L4])  # GPUS_ALL_REGIONS is 0, as in a new project
    assert (verdict.ok, verdict.metric, verdict.all_regions_short) == (False, "NVIDIA_L4_GPUS", (0.0, 0.0))
    assert verdict.line == (
        "NVIDIA_L4_GPUS in us-central1: limit 0, in use 0, this offer needs 1; "
        "GPUS_ALL_REGIONS too: limit 0, in use 0"
    )
    assert quota.no_quota_message(PROJECT, [verdict]) == (
        f"no offer has GPU quota in project {PROJECT}: request NVIDIA_L4_GPUS >= 1 in us-central1 plus "
        f"GPUS_ALL_REGIONS >= 1 (the smallest new limit that lets an offer run) at {CONSOLE}, then run this "
        "again (a grant can take a day or more)"
    )


def test_one_regions_get_per_region_and_one_projects_get_per_check_in_the_order_of_the_needs(compute):
    for region in ("us-central1", "us-east1"):
        compute.set_quota(region, "NVIDIA_T4_GPUS", limit=4)
        compute.set_quota(region, "NVIDIA_L4_GPUS", limit=4)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=4)
    needs = [
        T4,
        Need("nvidia-l4", 2, spot=False, region="us-east1"),
        L4,
        T4_SPOT,
        Need("nvidia-tesla-t4", 8, spot=False, region="us-east1"),
    ]
    verdicts = compute.check(needs)
    assert [v.need for v in verdicts] == needs
    assert [v.ok for v in verdicts] == [True, True, True, True, False]
    assert Counter(compute.requests) == {
        regions_get("us-central1"): 1, regions_get("us-east1"): 1, PROJECTS_GET: 1,
    }  # fmt: skip
    compute.check(needs)  # a new check reads again: nothing is kept between calls
    assert len(compute.requests) == 6


def test_compute_api_not_enabled_is_one_line_that_says_how_to_enable_it(compute):
    compute.api_disabled.add(PROJECT)
    with pytest.raises(UserError) as caught:
        compute.check([T4_SPOT])
    assert str(caught.value) == (
        f"the Compute Engine API is not enabled in project {PROJECT}: enable compute.googleapis.com "
        f"(console: https://console.cloud.google.com/apis/library/compute.googleapis.com?project={PROJECT}, "
        "or gcloud services enable compute.googleapis.com), then run this again"
    )


def test_an_unknown_project_names_project_id(compute):
    with pytest.raises(UserError) as caught:
        compute.check([T4], project="no-such-project")
    assert str(caught.value) == (
        "project no-such-project not found by the Compute Engine API: check project_id in the tfvars"
    )
    assert compute.requests == [
        regions_get("us-central1", "no-such-project"),
        ("GET", "/compute/v1/projects/no-such-project"),
    ]


def test_an_unknown_region_names_the_region(compute):
    with pytest.raises(UserError) as caught:
        compute.check([Need("nvidia-l4", 1, spot=False, region="us-middle9")])
    assert str(caught.value) == (
        "region us-middle9 is not a Compute Engine region: check the region (or zone) in the tfvars "
        "(gcloud compute regions list names them)"
    )


def test_a_login_without_the_permission_is_told_the_role_to_ask_for(compute):
    compute.denied.add(PROJECT)
    with pytest.raises(UserError) as caught:
        compute.check([T4])
    assert str(caught.value) == (
        f"the login may not read the GPU quotas of project {PROJECT} (compute.regions.get denied): "
        "ask for the role roles/compute.viewer on the project (it grants compute.regions.get and "
        "compute.projects.get), then run this again"
    )


def test_an_unreachable_endpoint_is_unreadable_at_once(compute, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(QuotaUnreadable) as caught:
        quota.check(PROJECT, [T4], credentials=compute.credentials(tmp_path), endpoint=endpoint)
    assert time.monotonic() - started < 30
    assert str(caught.value) == "the Compute Engine API could not be reached (Connection refused)"


def test_an_endpoint_that_never_answers_times_out_without_retrying(compute, tmp_path, monkeypatch):
    monkeypatch.setattr(quota, "TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(QuotaUnreadable) as caught:
            quota.check(PROJECT, [T4], credentials=compute.credentials(tmp_path), endpoint=endpoint)
        assert time.monotonic() - started < 5
    assert str(caught.value) == "the Compute Engine API did not answer within 0.5 s"


def test_a_server_error_is_unreadable_after_one_request(compute):
    compute.fail_with(503, "UNAVAILABLE", "The service is currently unavailable.")
    with ThreadPoolExecutor(1) as pool:  # the client's default retry would go on for 600 s: fail fast
        answer = pool.submit(compute.check, [T4, L4])
        try:
            caught = answer.exception(timeout=10)
        finally:
            compute.close()  # a client still retrying meets a closed port and stops
    assert isinstance(caught, QuotaUnreadable)
    assert str(caught) == ("the Compute Engine API answered 503 (The service is currently unavailable.)")
    assert compute.requests == [regions_get("us-central1")]


def test_a_user_login_is_refreshed_first_and_an_unreachable_token_endpoint_is_unreadable(compute):
    from google.oauth2.credentials import Credentials

    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=1)

    def user_login(token_uri: str) -> Credentials:
        return Credentials(
            None, refresh_token="stand-in", token_uri=token_uri, client_id="c", client_secret="s"
        )

    [verdict] = quota.check(
        PROJECT, [T4_SPOT], credentials=user_login(f"{compute.url}/token"), endpoint=compute.url
    )
    assert verdict.ok and compute.api.tokens_issued == 1
    started = time.monotonic()
    with pytest.raises(QuotaUnreadable) as caught:
        quota.check(
            PROJECT,
            [T4_SPOT],
            credentials=user_login(f"http://127.0.0.1:{closed_port()}/token"),
            endpoint=compute.url,
        )
    assert str(caught.value) == (
        "the Google login could not be refreshed (Connection refused): run `gcloud auth "
        "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
    )
    assert time.monotonic() - started < 30


def test_the_default_login_is_the_application_default_one(compute, tmp_path, monkeypatch):
    from tests.standins.google_api import key_file

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file(tmp_path / "adc.json", compute.api)))
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=1)
    [verdict] = quota.check(PROJECT, [T4_SPOT], endpoint=compute.url)
    assert verdict.ok


def test_no_quota_message_is_one_line_with_the_smallest_request_for_each_quota(compute):
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=0)
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=0)
    compute.set_quota("us-central1", "NVIDIA_L4_GPUS", limit=8, usage=1)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=1, usage=1)
    needs = [
        Need("nvidia-tesla-t4", 2, spot=True, region="us-central1"),  # 2 VMs of 1 T4
        T4_SPOT,
        Need("nvidia-l4", 4, spot=False, region="us-central1"),
        L4,
    ]
    verdicts = compute.check(needs)
    assert not any(v.ok for v in verdicts)
    message = quota.no_quota_message(PROJECT, verdicts)
    assert message == (
        f"no offer has GPU quota in project {PROJECT}: request PREEMPTIBLE_NVIDIA_T4_GPUS >= 1 in "
        "us-central1, or GPUS_ALL_REGIONS >= 2 (each the smallest new limit that lets an offer run) at "
        f"{CONSOLE}, then run this again (a grant can take a day or more)"
    )
    assert "\n" not in message
