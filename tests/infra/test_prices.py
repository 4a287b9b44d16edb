"""The price table (ops/prices.py) and the hourly price of a real Terraform plan of infra/.

The plans come from real Terraform over the module with the stand-in google provider
(tests/standins/tf_harness.py); the figures are checked against the table by hand-written sums, so a
changed price, a lost disk or a GPU counted once instead of per VM changes the total.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date

import pytest

from ops import prices
from tests.standins.tf_harness import BASE_VARS, INFRA
from tests.support import ROOT

KEY = str(INFRA / "tests" / "fixtures" / "id_test.pub")
DISKS_GB = 50 + 100  # boot (pd-balanced, boot_disk_size_gb) + data (data_disk_type, data_disk_size_gb)
DISK_HOURLY = DISKS_GB * 0.10 / 730


# ---- the table ----------------------------------------------------------------------------------


def test_the_table_is_dated_sourced_and_covers_what_the_module_allows():
    assert date.fromisoformat(prices.PRICE_DATE) <= date.today()
    variables = (INFRA / "variables.tf").read_text()
    gpu_types = set(re.findall(r'"(nvidia-[-a-z0-9]+)"', variables))
    disk_types = set(re.findall(r'"(pd-\w+)"', variables))
    assert gpu_types == set(prices.GPUS) and disk_types == set(prices.DISKS)
    assert {"n1-standard-4", "n1-standard-8", "n1-standard-16"} <= set(prices.MACHINES)
    # Every priced machine type is one the module allows (test_gpu_kinds: every G2 / A2 one is priced).
    pattern = re.search(r'condition\s+= can\(regex\("(\^\(n1-[^"]+)", var\.machine_type', variables)
    assert pattern, "machine_type's validation pattern"
    allowed = {m for m in prices.MACHINES if re.fullmatch(pattern.group(1), m)}
    assert allowed == set(prices.MACHINES) and set(prices.BUILT_IN_GPUS) <= set(prices.MACHINES)
    for table in (prices.MACHINES, prices.GPUS, prices.DISKS):
        for name, price in table.items():
            assert price.source and 0 < price.spot <= price.on_demand, name
    # DESIGN.md's figures, as the design states them.
    machine, gpu = prices.MACHINES["n1-standard-4"], prices.GPUS["nvidia-tesla-t4"]
    assert (machine.on_demand, machine.spot, gpu.on_demand, gpu.spot) == (0.19, 0.052, 0.35, 0.175)


def test_the_printed_table_marks_every_estimate():
    lines = prices.table_lines()
    assert prices.PRICE_DATE in lines[0]
    flagged = [line for line in lines[1:] if "[estimate:" in line]
    estimated = [p for t in (prices.MACHINES, prices.GPUS, prices.DISKS) for p in t.values() if p.estimate]
    assert len(flagged) == len(estimated) + 1  # + the external address


def test_a_t4_vm_costs_what_design_says_on_demand_and_as_spot():
    on_demand = prices.hourly_price("n1-standard-4", "nvidia-tesla-t4", 1, spot=False)
    spot = prices.hourly_price("n1-standard-4", "nvidia-tesla-t4", 1, spot=True)
    assert on_demand["machine"] + on_demand["gpus"] == pytest.approx(0.54)  # DESIGN: "≈ $0.54/h"
    assert spot["machine"] + spot["gpus"] == pytest.approx(0.227)  # DESIGN: "≈ $0.23/h as spot"


@pytest.mark.parametrize(
    ("machine_type", "gpu_type", "gpu_count"),
    [
        ("g2-standard-4", "nvidia-l4", 1),
        ("a2-highgpu-1g", "nvidia-tesla-a100", 1),
        ("a2-ultragpu-8g", "nvidia-a100-80gb", 8),
    ],
)
def test_g2_and_a2_vms_are_priced_as_their_machine_part_plus_their_gpus(machine_type, gpu_type, gpu_count):
    for spot in (False, True):
        price = prices.hourly_price(machine_type, gpu_type, gpu_count, spot=spot)
        assert price["machine"] == pytest.approx(prices.MACHINES[machine_type].rate(spot))
        assert price["gpus"] == pytest.approx(gpu_count * prices.GPUS[gpu_type].rate(spot))
        assert price["gpus"] > 0 and price["machine"] > 0
    # Not read on PRICE_DATE: each is marked as an estimate, and the printed table says so.
    assert prices.MACHINES[machine_type].estimate and prices.GPUS[gpu_type].estimate
    assert prices.BUILT_IN_GPUS[machine_type] == (gpu_type, gpu_count)
    # a2-highgpu-1g: 12 vCPUs and 85 GiB at the A2 rates plus one A100 40GB (Google's $3.67/h VM).
    one_a100 = prices.hourly_price("a2-highgpu-1g", "nvidia-tesla-a100", 1, spot=False)
    assert one_a100["machine"] + one_a100["gpus"] == pytest.approx(3.673385, abs=1e-5)


def test_estimate_cost_sums_machine_gpus_address_and_disk_over_the_hours():
    cost = prices.estimate_cost("n1-standard-8", "nvidia-tesla-v100", 2, spot=True, disk_gb=150, hours=2.5)
    hourly = 0.104 + 2 * 0.992 + 0.0025 + DISK_HOURLY
    assert cost["hourly_usd"] == pytest.approx(hourly, abs=1e-6)
    assert cost["estimated_cost_usd"] == pytest.approx(round(hourly * 2.5, 4))
    assert cost["provisioning"] == "spot" and cost["gpu"] == {"type": "nvidia-tesla-v100", "count": 2}
    assert prices.PRICE_DATE in cost["prices"]
    two_nodes = prices.estimate_cost("n1-standard-4", "nvidia-tesla-t4", 1, False, 150, 1.0, nodes=2)
    assert two_nodes["hourly_usd"] == pytest.approx(2 * (0.19 + 0.35 + 0.005 + DISK_HOURLY))
    assert prices.estimate_cost("n1-standard-4", None, 0, False, 0, 0.0)["estimated_cost_usd"] == 0


def test_a_type_without_a_price_is_named_with_the_known_ones():
    with pytest.raises(
        prices.PriceUnknown, match=r"'n1-highmem-8'.*known: a2-highgpu-1g, .*n1-standard-16, n1-standard-4"
    ):
        prices.hourly_price("n1-highmem-8", "nvidia-tesla-t4", 1, spot=False)
    with pytest.raises(ValueError, match="hours"):
        prices.estimate_cost("n1-standard-4", "nvidia-tesla-t4", 1, False, 150, -1)


# ---- a real plan's price ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planner(stand_in_google, tmp_path_factory):
    tf = stand_in_google.terraform(tmp_path_factory.mktemp("price"))
    tf.init()
    return tf


@pytest.mark.terraform
@pytest.mark.parametrize(
    ("variables", "vms", "hourly"),
    [
        # The example's first offer: a T4 spot in us-central1.
        ({}, ["n1-standard-4 + 1 x nvidia-tesla-t4, spot"], 0.052 + 0.175 + 0.0025),
        # Without offers, the one of the scalar variables.
        ({"offers": []}, ["n1-standard-4 + 1 x nvidia-tesla-t4, on demand"], 0.19 + 0.35 + 0.005),
        ({"offers": [], "spot": True}, ["n1-standard-4 + 1 x nvidia-tesla-t4, spot"], 0.052 + 0.175 + 0.0025),
        (
            {"offers": [], "gpu_count": 4, "machine_type": "n1-standard-16"},
            ["n1-standard-16 + 4 x nvidia-tesla-t4, on demand"],
            0.76 + 4 * 0.35 + 0.005,
        ),
        (
            {"node_count": 3, "offers": [{"gpu_type": "nvidia-tesla-t4", "gpu_count": 2, "spot": True}]},
            ["n1-standard-4 + 2 x nvidia-tesla-t4, spot"] * 3,
            3 * (0.052 + 2 * 0.175 + 0.0025),
        ),
    ],
    ids=["example-tfvars", "no-offers", "spot", "four-gpus", "three-nodes"],
)
def test_the_plan_of_the_example_tfvars_and_its_variants_is_priced_from_the_table(
    planner, variables, vms, hourly
):
    # The variants after the example's file: a -var later on the command line wins (its offers too).
    example = "-var-file=terraform.tfvars.example"
    plan = planner.plan({"ssh_public_key_path": KEY}, example, *planner.var_args(variables))
    price = prices.plan_price(plan)
    nodes = len(vms)
    assert price["disk_gb"] == {"pd-balanced": DISKS_GB * nodes}
    assert price["running_hourly_usd"] == pytest.approx(hourly + nodes * DISK_HOURLY, abs=1e-6)
    assert price["stopped_hourly_usd"] == pytest.approx(nodes * DISK_HOURLY, abs=1e-6)
    lines = prices.plan_lines(plan)
    assert [line.split(": ", 1)[1].rsplit(":", 1)[0] for line in lines if "tweet-trainer" in line] == vms
    assert f"total: ${hourly + nodes * DISK_HOURLY:.4f}/h while running" in lines[-2]
    assert "Cloud Billing reports" in lines[-1]


@pytest.mark.terraform
def test_a_saved_plan_is_priced_and_a_plan_without_resources_costs_nothing(planner, tmp_path):
    """What `make infra-plan` prints under the plan: ops.prices.plan_lines of `terraform show -json`'s
    saved plan, read back from the file as the verb reads it."""
    plan = planner.plan({"ssh_public_key_path": KEY}, "-var-file=terraform.tfvars.example")
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps(plan))
    lines = prices.plan_lines(json.loads(saved.read_text()))
    assert "  tweet-trainer: n1-standard-4 + 1 x nvidia-tesla-t4, spot: $0.2295/h" in lines
    assert "  total: $0.2500/h while running, $0.0205/h stopped" in lines
    assert "  disks: 150 GB pd-balanced: $0.0205/h ($15.00/month, stopped too)" in lines
    # A plan that leaves nothing running (infra-down's, or no resources at all) costs nothing.
    nothing = prices.plan_lines({"planned_values": {"root_module": {}}})
    assert "  total: $0.0000/h while running, $0.0000/h stopped" in nothing
    assert prices.plan_lines({}) == nothing


def test_a_plan_with_a_type_the_table_lacks_says_the_price_is_unknown():
    vm = {"type": "google_compute_instance", "values": {"name": "tt", "machine_type": "n1-ultramem-40"}}
    lines = prices.plan_lines({"planned_values": {"root_module": {"resources": [vm]}}})
    assert len(lines) == 1 and lines[0].startswith("price: unknown (no machine price for 'n1-ultramem-40'")


def test_the_prices_name_the_tables_file():
    """The price lines, a manifest's `prices` note and PriceUnknown point at the table where it lives."""
    assert (ROOT / "ops" / "prices.py").is_file() and not (ROOT / "trainer" / "prices.py").exists()
    with pytest.raises(prices.PriceUnknown) as unknown:
        prices.hourly_price("n1-highmem-8", None, 0, spot=False)
    cost = prices.estimate_cost("n1-standard-4", None, 0, False, 0, 0.0)
    for text in (str(unknown.value), cost["prices"], prices.plan_lines({})[0]):
        assert "ops/prices.py" in text and "trainer/prices.py" not in text, text


def adc_file(path):
    """Application-default credentials of a user login (ops loads them before it plans; nothing is asked
    of Google: the stand-in provider answers the plan)."""
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                                "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    return path


@pytest.mark.terraform
def test_ops_price_plans_the_users_tfvars_and_prints_the_price(stand_in_google, tmp_path, laptop_env):
    """`make infra-price`'s command, `python -m ops price`, with terraform in a copy of infra/."""
    tf = stand_in_google.terraform(tmp_path / "infra")
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**BASE_VARS, "spot": True}.items()))
    adc = adc_file(tmp_path / "adc.json")
    env = {**tf.env, "PATH": laptop_env["PATH"], "INFRA_DIR": str(tf.workdir), "TFVARS": str(tfvars),
           "GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true"}  # fmt: skip

    def price(**changes: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ops", "price"],
            capture_output=True, text=True, env={**env, **changes}, cwd=ROOT, timeout=300,
        )  # fmt: skip

    done = price()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "  tweet-trainer: n1-standard-4 + 1 x nvidia-tesla-t4, spot: $0.2295/h" in done.stdout.splitlines()
    assert "total: $0.2500/h while running" in done.stdout
    assert tf.cloud.resources() == []  # a plan creates nothing
    # No tfvars of the user's yet: one line that says how to make them, before terraform plans anything.
    missing = tmp_path / "none.tfvars"
    done = price(TFVARS=str(missing))
    assert done.returncode == 2 and done.stderr == (
        f"error: {missing} not found: cp {tf.workdir}/terraform.tfvars.example {missing} and set project_id "
        "and ssh_source_ranges\n"
    )
