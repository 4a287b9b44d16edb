"""Offers (ops.offers, ops.ranking, ops.terraform's converge): several GPU kinds and regions tried in
order, the quota preflight before any apply, and the offers priced by the run they would train.

What stands in for GCP: the stand-in google provider (stock-outs, quota errors per zone or region), the
stand-in Compute Engine API (tests/standins/compute_api.py: the quotas the preflight reads with the real
google-cloud-compute client) and the stand-in Cloud Billing Catalog (tests/standins/billing_catalog.py,
read by the real google-cloud-billing client), both behind one service-account login on loopback. Real:
Terraform over infra/ and `python -m ops` in-process (the verbs make runs), with the fixtures of
test_watch.py: the run on the VM is a stand-in that writes the manifest (ops.runs.train monkeypatched).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ops.runs
from ops.__main__ import Settings, main
from ops.offers import PLACEMENT_FILE
from tests.cloud.test_watch import (  # noqa: F401 (fixtures)
    BUCKET,
    RUN,
    VM,
    bucket,
    compute,
    finish_run,
    laptop,
    said,
    tf,
    tfvars,
)
from tests.standins.billing_catalog import StandInCatalog
from tests.standins.google_provider.cloud import STOCK_OUT

pytestmark = pytest.mark.terraform

OFFERS = [
    {"gpu_type": "nvidia-tesla-t4", "spot": True, "zones": ["us-central1-a"]},
    {"gpu_type": "nvidia-tesla-t4", "spot": True, "regions": ["us-east1"]},
    {"gpu_type": "nvidia-l4", "spot": True, "regions": ["us-central1"]},
]
T4_SPOT = "1 x nvidia-tesla-t4 (n1-standard-4), spot"
L4_SPOT = "1 x nvidia-l4 (g2-standard-4), spot"


def trains_here(monkeypatch) -> list[str]:
    """ops.runs.train replaced by a run that finishes at once; each call records the VM's address."""
    hosts: list[str] = []

    def train(nodes, root, run, args, inputs, follow_it=True) -> int:
        (vm,) = nodes  # one VM: a list of one node
        hosts.append(vm.conn.host)
        finish_run()
        return 0

    monkeypatch.setattr(ops.runs, "train", train)
    monkeypatch.setattr(Settings, "provision", lambda self, extra=(): None)
    return hosts


def test_watch_walks_the_offers_to_l4_spot_and_keeps_it_until_infra_down(
    tf, laptop, bucket, monkeypatch, capfd
):
    """A stock-out of the T4 in the first zone, a GPU quota error in the next region, success on L4 spot:
    the run trains on the third offer, each move is one line, the placement is remembered (the next
    apply tries it first and leaves the VM as it is), and make infra-down forgets it."""
    tf.cloud.add_rule(VM, {"zone": "us-central1-a", "machine_type": "n1-standard-4"}, create_error=STOCK_OUT)
    tf.cloud.quota_exceeded("us-east1", metric="PREEMPTIBLE_NVIDIA_T4_GPUS")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.3")
    tfvars(Path(laptop["HOME"]), offers=OFFERS)
    hosts = trains_here(monkeypatch)
    assert main(["watch", RUN]) == 0
    lines = said(capfd.readouterr().out)
    moves = [line for line in lines if line.startswith("watch: terraform apply in ") or "; moving to" in line]
    assert moves[0] == f"watch: terraform apply in us-central1-a: offer 1, {T4_SPOT} (try 1 of 6)"
    assert moves[1].startswith("watch: us-central1-a has no capacity (Error: Error waiting for instance")
    assert moves[1].endswith(
        f"moving to us-east1-c (offer 2, {T4_SPOT}): a new VM and data disk in us-east1; the bucket stays "
        "and keeps the checkpoints"
    )
    assert moves[2] == f"watch: terraform apply in us-east1-c: offer 2, {T4_SPOT} (try 2 of 6)"
    assert moves[3].startswith(
        "watch: offer 2 has no GPU quota in us-east1 (Error: Error waiting for instance to create: "
        "QUOTA_EXCEEDED: Quota 'PREEMPTIBLE_NVIDIA_T4_GPUS'"
    )
    # us-east1-d shares the region's quota: skipped, straight to the L4.
    assert moves[3].endswith(
        f"moving to us-central1-a (offer 3, {L4_SPOT}): a new VM and data disk in us-central1; the bucket "
        "stays and keeps the checkpoints"
    )
    assert moves[4] == f"watch: terraform apply in us-central1-a: offer 3, {L4_SPOT} (try 3 of 5)"
    assert len(moves) == 5
    assert (
        f"watch: the VM runs on offer 3, {L4_SPOT} in us-central1-a: {tf.workdir / PLACEMENT_FILE} keeps it "
        "there for later applies (make infra-down forgets it)"
    ) in lines
    assert lines[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"
    assert hosts == ["127.0.0.3"]
    (vm,) = tf.cloud.resources(VM)
    assert (vm["zone"], vm["machine_type"], vm["guest_accelerator"]) == ("us-central1-a", "g2-standard-4", [])
    assert vm["scheduling"][0]["provisioning_model"] == "SPOT"
    # The bucket never moved: it is in zone's region, whatever region the VM went to.
    assert [b["location"] for b in tf.cloud.resources("google_storage_bucket")] == ["US-CENTRAL1"]
    placement = json.loads((tf.workdir / PLACEMENT_FILE).read_text())["placement"]
    assert placement == {"offer": 3, "zone": "us-central1-a", "machine_type": "g2-standard-4",
                         "gpu_type": "nvidia-l4", "gpu_count": 1, "spot": True}  # fmt: skip

    # The next converge (make infra-apply; make train MODE=cloud then reads its inventory) starts on the
    # remembered offer and changes nothing.
    assert main(["apply"]) == 0
    out = capfd.readouterr().out
    assert said(out)[0] == f"watch: terraform apply in us-central1-a: offer 3, {L4_SPOT} (try 1 of 6)"
    assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in out
    assert (vm["id"],) == tuple(v["id"] for v in tf.cloud.resources(VM))

    # make infra-down forgets the placement: the next infra-up starts from the first offer again.
    assert main(["down"]) == 0
    capfd.readouterr()
    assert not (tf.workdir / PLACEMENT_FILE).exists()
    assert tf.cloud.resources(VM) == []


def test_the_quota_preflight_skips_offers_without_quota_before_any_apply(
    tf, laptop, compute, monkeypatch, capfd
):
    trains_here(monkeypatch)
    compute.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=0)
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=0)
    tfvars(Path(laptop["HOME"]), offers=[OFFERS[0], OFFERS[2]])
    assert main(["apply"]) == 0
    out = capfd.readouterr().out
    lines = said(out)
    # Spot with no preemptible quota would use the standard quota: none either.
    assert lines[0] == (
        f"watch: offer 1 ({T4_SPOT}) skipped in us-central1: no GPU quota, PREEMPTIBLE_NVIDIA_T4_GPUS in "
        "us-central1: limit 0, in use 0, this offer needs 1 (without it spot VMs use NVIDIA_T4_GPUS: limit "
        "0, in use 0)"
    )
    assert lines[1] == f"watch: terraform apply in us-central1-a: offer 2, {L4_SPOT} (try 1 of 3)"
    assert not any("offer 1, " in line for line in lines if "terraform apply" in line)  # never applied
    (vm,) = tf.cloud.resources(VM)
    assert vm["machine_type"] == "g2-standard-4"
    # One regions.get for the region both offers are in; no projects.get: both spot offers are judged by
    # the region's quotas alone (GPUS_ALL_REGIONS counts standard GPUs, which the L4 spot does not use).
    assert compute.requests == [("GET", "/compute/v1/projects/stand-in-project/regions/us-central1")]


def test_no_quota_anywhere_is_one_line_and_exit_2_before_anything_is_made(tf, laptop, compute, capfd):
    for kind in ("T4", "L4"):
        compute.set_quota("us-central1", f"NVIDIA_{kind}_GPUS", limit=0)
        compute.set_quota("us-central1", f"PREEMPTIBLE_NVIDIA_{kind}_GPUS", limit=0)
    compute.set_quota("us-east1", "NVIDIA_T4_GPUS", limit=0)
    compute.set_quota("us-east1", "PREEMPTIBLE_NVIDIA_T4_GPUS", limit=0)
    tfvars(Path(laptop["HOME"]), offers=OFFERS)
    assert main(["apply"]) == 2
    out, err = capfd.readouterr()
    assert err.count("\n") == 1 and err.startswith(
        "error: no offer has GPU quota in project stand-in-project"
    )
    assert "https://console.cloud.google.com/iam-admin/quotas?project=stand-in-project" in err
    assert "NVIDIA_T4_GPUS" in err and "NVIDIA_L4_GPUS" in err
    assert "terraform apply" not in out
    assert tf.cloud.resources() == []  # nothing created, not even the bucket


def test_a_project_without_the_compute_api_is_told_to_enable_it(tf, laptop, compute, capfd):
    compute.api_disabled.add("stand-in-project")
    assert main(["apply"]) == 2
    _, err = capfd.readouterr()
    assert err.startswith("error: the Compute Engine API is not enabled in project stand-in-project: enable "
                          "compute.googleapis.com")  # fmt: skip
    assert err.count("\n") == 1 and tf.cloud.resources() == []


def test_quota_check_0_skips_the_preflight(tf, laptop, compute, monkeypatch, capfd):
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=0)
    monkeypatch.setenv("QUOTA_CHECK", "0")
    trains_here(monkeypatch)
    assert main(["apply"]) == 0
    assert said(capfd.readouterr().out)[0] == "watch: GPU quota not checked (QUOTA_CHECK=0)"
    assert compute.requests == []


@pytest.mark.parametrize(
    ("offer", "words"),
    [
        ({"gpu_type": "nvidia-l4", "gpu_count": 16},
         "offer 1 (16 x nvidia-l4): no machine type comes with 16 of them; set gpu_count to 1, 2, 4, 8"),
        ({"gpu_type": "nvidia-tesla-t4", "machine_type": "g2-standard-4"},
         "offer 1: g2-standard-4 comes with its own GPUs, nvidia-tesla-t4 attaches to N1 machine types only"),
        ({"gpu_type": "nvidia-l4", "machine_type": "a2-highgpu-1g"}, "offer 1: a2-highgpu-1g does not come "
         "with nvidia-l4"),
        ({"gpu_type": "nvidia-l4", "gpu_count": 2, "machine_type": "g2-standard-4"}, "offer 1: g2-standard-4 "
         "comes with 1 nvidia-l4, not 2"),
        ({"gpu_type": "nvidia-a100-80gb", "regions": ["us-west1"]}, "offer 1 (nvidia-a100-80gb): no zone "
         "known for it in us-west1"),
    ],
    ids=["no-machine-has-16-l4", "t4-on-g2", "l4-on-a2", "count-not-the-machines", "no-zone-known"],
)  # fmt: skip
def test_an_offer_that_cannot_be_made_is_refused_before_anything(tf, laptop, compute, capfd, offer, words):
    variables = tfvars(Path(laptop["HOME"]), offers=[offer])
    assert main(["apply"]) == 2
    out, err = capfd.readouterr()
    assert err.startswith(f"error: offers in {variables}: {words}"), err
    assert err.count("\n") == 1 and "terraform apply" not in out and compute.requests == []


@pytest.fixture
def catalog(compute):
    """The stand-in Billing Catalog on the same loopback API (one login for both), with us-central1 and
    us-east1 prices for the T4 on N1 and the L4 on G2, spot and on demand."""
    prices = StandInCatalog(page_size=5, api=compute.api)
    for region, area in (("us-central1", "Americas"), ("us-east1", "Americas")):
        prices.add_gpu("Nvidia Tesla T4", area, [region], on_demand=0.35, spot=0.14)
        prices.add_gpu("Nvidia L4", area, [region], on_demand=0.56, spot=0.22)
        prices.add_series("N1 Predefined Instance", "N1Standard", area, [region], core=(0.0316, 0.0067),
                          ram=(0.0042, 0.0009))  # fmt: skip
        prices.add_series(
            "G2 Instance", "G2Standard", area, [region], core=(0.025, 0.01), ram=(0.0029, 0.0012)
        )
    prices.add_decoys(["us-central1"])
    return prices


def test_offers_are_listed_with_price_and_run_cost_and_the_cheapest_run_goes_first(
    tf, laptop, catalog, tiny_model_dir, tiny_csv, monkeypatch, capfd
):
    """`python -m ops offers` (and make infra-plan under its plan): each offer's hourly price from the
    Billing Catalog, the run's estimated hours and cost (its FLOPs from the tiny model and CSV, at each
    GPU's peak x the assumed MFU), quota state; `offer_order = "cheapest"` tries the cheapest run first."""
    from ops.runcost import ASSUMED_MFU, peak, run_work
    from tests.support import ROOT

    monkeypatch.setenv("DATA", str(tiny_csv))
    monkeypatch.setenv("MODEL", str(tiny_model_dir))
    trains_here(monkeypatch)
    tfvars(Path(laptop["HOME"]), offers=[OFFERS[0], OFFERS[2]], offer_order="cheapest")
    assert main(["offers"]) == 0
    out = capfd.readouterr().out.splitlines()
    out = out[out.index("offers (cheapest run first; prices per hour of machine + GPUs):") :]
    work = run_work(ROOT / "config" / "cloud.yaml", str(tiny_csv), str(tiny_model_dir))
    t4_hourly = 4 * 0.0067 + 15 * 0.0009 + 0.14
    l4_hourly = 4 * 0.01 + 16 * 0.0012 + 0.22
    t4_hours = work.flops / (peak("nvidia-tesla-t4")[0] * 1e12 * ASSUMED_MFU) / 3600
    l4_hours = work.flops / (peak("nvidia-l4")[0] * 1e12 * ASSUMED_MFU) / 3600
    assert l4_hours * l4_hourly < t4_hours * t4_hourly  # the L4 is dearer by the hour, cheaper by the run
    assert out[0] == "offers (cheapest run first; prices per hour of machine + GPUs):"
    assert out[1] == f"  offer 2: {L4_SPOT} in us-central1-a, us-central1-b, us-central1-c"
    assert out[2].startswith(f"      ${l4_hourly:.4f}/h [Billing Catalog ")
    assert f"run ~{l4_hours:.2f} h, ~${l4_hours * l4_hourly:.2f} (MFU assumed 15%); quota: ok" in out[2]
    assert out[3] == f"  offer 1: {T4_SPOT} in us-central1-a"
    assert out[4].startswith(f"      ${t4_hourly:.4f}/h [Billing Catalog ")
    assert out[5].startswith(f"  the run: {work.flops:.3g} training FLOPs ({tiny_model_dir}, ")

    # make infra-up tries the cheapest run's offer first, and says why.
    assert main(["apply"]) == 0
    lines = said(capfd.readouterr().out)
    assert f"watch: terraform apply in us-central1-a: offer 2, {L4_SPOT} (try 1 of 4)" in lines
    assert lines.index("watch: offers (cheapest run first; prices per hour of machine + GPUs):") < next(
        i for i, line in enumerate(lines) if "terraform apply" in line
    )
    assert [vm["machine_type"] for vm in tf.cloud.resources(VM)] == ["g2-standard-4"]


def test_infra_plan_plans_the_first_offer_and_lists_them_all(tf, laptop, capfd, monkeypatch):
    """Without the Billing Catalog (its address answers 404) the dated table prices them, and says so; an
    offer with no local data to count shows no run cost, with the reason."""
    monkeypatch.setenv("DATA", str(Path(laptop["HOME"]) / "missing.csv"))
    tfvars(Path(laptop["HOME"]), offers=[OFFERS[2], OFFERS[0]])
    assert main(["plan"]) == 0
    out = capfd.readouterr().out
    assert '+ machine_type              = "g2-standard-4"' in out
    assert "offers (in the order listed; prices per hour of machine + GPUs):" in out
    assert f"  offer 1: {L4_SPOT} in us-central1-a, us-central1-b, us-central1-c" in out
    assert "[table 2026-11-27" in out and "run cost: n/a; quota: ok" in out
    assert "the run's cost is not estimated: no local data to count" in out
    assert "prices from the dated table (the Billing Catalog was not read: " in out


def test_a_vm_made_before_the_placement_was_remembered_is_not_refused_for_its_own_quota(
    tf, laptop, compute, monkeypatch, capfd
):
    """A VM that a plain `terraform apply` made (or an older version of ops: no placement file) holds the
    region's only T4: the preflight must not count it against itself, and the converge keeps it."""
    tf.apply()
    compute.set_quota("us-central1", "NVIDIA_T4_GPUS", limit=1, usage=1)
    compute.set_project_quota("GPUS_ALL_REGIONS", limit=1, usage=1)
    trains_here(monkeypatch)
    assert main(["apply"]) == 0
    out = capfd.readouterr().out
    lines = said(out)
    # Its region's other zones would need one more T4: skipped; its own zone is tried, and changes nothing.
    assert lines[0].startswith(
        "watch: offer 1 (1 x nvidia-tesla-t4 (n1-standard-4), on demand) skipped in us-central1-b, "
        "us-central1-c, us-central1-f: no GPU quota, NVIDIA_T4_GPUS in us-central1: limit 1, in use 1, this "
        "offer needs 1"
    )
    assert lines[1] == (
        "watch: terraform apply in us-central1-a: offer 1, 1 x nvidia-tesla-t4 (n1-standard-4), on demand "
        "(try 1 of 1)"
    )
    assert "Resources: 0 added, 0 changed, 0 destroyed." in out
