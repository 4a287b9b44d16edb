"""The GPU kinds infra/ makes: N1 with attached T4s (the default), G2 with its L4s, A2 with its A100s
(40GB: a2-highgpu, 80GB: a2-ultragpu), each on demand and as spot; and every machine type / GPU
combination Google does not offer refused at plan time with a message that names the fix.

Real Terraform plans the module with the stand-in google provider (tests/standins/tf_harness.py); the
price of each plan comes from ops/prices.py the way `make infra-plan` and the inventory price it.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ops import prices
from tests.standins.tf_harness import BASE_VARS, TerraformError

pytestmark = pytest.mark.terraform

# (machine_type, gpu_type, gpu_count, attached): attached GPUs get a guest_accelerator block.
KINDS = {
    "t4-n1": ("n1-standard-4", "nvidia-tesla-t4", 1, True),
    "l4-g2": ("g2-standard-4", "nvidia-l4", 1, False),
    "a100-40gb-a2-highgpu": ("a2-highgpu-1g", "nvidia-tesla-a100", 1, False),
    "a100-80gb-a2-ultragpu": ("a2-ultragpu-2g", "nvidia-a100-80gb", 2, False),
}


@pytest.fixture(scope="module")
def planner(stand_in_google, tmp_path_factory):
    tf = stand_in_google.terraform(tmp_path_factory.mktemp("gpu-kinds"))
    tf.init()
    return tf


def instance(plan: dict) -> dict:
    for change in plan["resource_changes"]:
        if change["address"] == "google_compute_instance.trainer[0]":
            return change["change"]["after"]
    raise AssertionError("no google_compute_instance.trainer[0] in the plan")


def refusal(planner, variables: dict) -> str:
    """The plan's error text, one line (Terraform wraps messages and frames them with │)."""
    with pytest.raises(TerraformError) as failed:
        planner.plan(variables)
    return " ".join(failed.value.output.replace("│", " ").split())


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_gpu_kind_plans_with_its_gpus_and_terminates_on_maintenance(planner, kind, spot):
    machine_type, gpu_type, gpu_count, attached = KINDS[kind]
    plan = planner.plan(
        {"machine_type": machine_type, "gpu_type": gpu_type, "gpu_count": gpu_count, "spot": spot}
    )
    vm = instance(plan)
    assert vm["machine_type"] == machine_type
    # N1 gets its GPUs attached; G2 and A2 come with theirs, and asking for them again is an error.
    assert vm["guest_accelerator"] == ([{"type": gpu_type, "count": gpu_count}] if attached else [])
    scheduling = vm["scheduling"][0]
    assert scheduling["on_host_maintenance"] == "TERMINATE"
    assert scheduling["provisioning_model"] == ("SPOT" if spot else "STANDARD")
    assert scheduling["preemptible"] is spot and scheduling["automatic_restart"] is not spot
    # What the inventory prices (price_inputs) and what `make infra-plan` prices (the planned VM) agree.
    inputs = plan["planned_values"]["outputs"]["price_inputs"]["value"]
    assert (inputs["machine_type"], inputs["gpu_type"], inputs["gpu_count"], inputs["spot"]) == (
        machine_type, gpu_type, gpu_count, spot,
    )  # fmt: skip
    expected = prices.hourly_price(machine_type, gpu_type, gpu_count, spot)
    priced = prices.plan_price(plan)
    assert priced["vms"][0]["gpu_type"] == gpu_type and priced["vms"][0]["gpu_count"] == gpu_count
    assert priced["vms"][0]["hourly_usd"] == pytest.approx(expected["running"])
    assert expected["gpus"] == pytest.approx(gpu_count * prices.GPUS[gpu_type].rate(spot))


@pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "spot"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_gpu_kind_applies_as_an_offer(stand_in_google, tmp_path, kind, spot):
    """An apply of the offer (GPU kind, count, spot; the machine type the module picks): the VM GCP is asked
    for has the machine type that comes with (or takes) those GPUs, and the outputs the inventory and the
    trainer's price read name them."""
    machine_type, gpu_type, gpu_count, attached = KINDS[kind]
    tf = stand_in_google.terraform(tmp_path / "infra")
    tf.init()
    offer = {"gpu_type": gpu_type, "gpu_count": gpu_count, "spot": spot, "zones": ["us-central1-c"]}
    tf.apply({"offers": [offer]})
    (vm,) = tf.cloud.resources("google_compute_instance")
    assert (vm["machine_type"], vm["zone"]) == (machine_type, "us-central1-c")
    assert vm["guest_accelerator"] == ([{"type": gpu_type, "count": gpu_count}] if attached else [])
    assert vm["scheduling"][0]["provisioning_model"] == ("SPOT" if spot else "STANDARD")
    assert vm["scheduling"][0]["on_host_maintenance"] == "TERMINATE"
    outputs = {name: o["value"] for name, o in tf.output().items()}
    where = (outputs["gpu_type"], outputs["gpu_count"], outputs["zone"])
    assert where == (gpu_type, gpu_count, "us-central1-c")
    inputs = outputs["price_inputs"]
    assert (inputs["machine_type"], inputs["spot"]) == (machine_type, spot)


# (variables, the message's words): every combination Google does not offer.
REFUSED = {
    "l4-on-n1": (
        {"gpu_type": "nvidia-l4"},
        "machine_type n1-standard-4 (N1) takes attached nvidia-tesla-t4, nvidia-tesla-p4, "
        "nvidia-tesla-v100, nvidia-tesla-p100 only; nvidia-l4 comes with its own machine types: "
        'set machine_type = "g2-standard-4" for 1 nvidia-l4.',
    ),
    "a100-on-n1": (
        {"gpu_type": "nvidia-tesla-a100", "gpu_count": 2},
        'set machine_type = "a2-highgpu-2g" for 2 nvidia-tesla-a100.',
    ),
    "eight-t4s-on-n1": (
        {"gpu_count": 8, "machine_type": "n1-standard-32"},
        "machine_type n1-standard-32 takes 1, 2 or 4 attached nvidia-tesla-t4: set gpu_count = 1, 2 or 4",
    ),
    "t4-on-g2": (
        {"machine_type": "g2-standard-4"},
        'machine_type g2-standard-4 comes with 1 nvidia-l4: set gpu_type = "nvidia-l4" and gpu_count = 1, '
        'or an N1 machine_type such as "n1-standard-4" for nvidia-tesla-t4.',
    ),
    "a100-on-g2": (
        {"machine_type": "g2-standard-8", "gpu_type": "nvidia-tesla-a100"},
        'machine_type g2-standard-8 comes with 1 nvidia-l4: set gpu_type = "nvidia-l4" and gpu_count = 1, '
        'or machine_type = "a2-highgpu-1g" for 1 nvidia-tesla-a100.',
    ),
    "l4-on-a2": (
        {"machine_type": "a2-highgpu-1g", "gpu_type": "nvidia-l4"},
        'machine_type a2-highgpu-1g comes with 1 nvidia-tesla-a100: set gpu_type = "nvidia-tesla-a100" and '
        'gpu_count = 1, or machine_type = "g2-standard-4" for 1 nvidia-l4.',
    ),
    "a100-40gb-on-ultragpu": (
        {"machine_type": "a2-ultragpu-1g", "gpu_type": "nvidia-tesla-a100"},
        'machine_type a2-ultragpu-1g comes with 1 nvidia-a100-80gb: set gpu_type = "nvidia-a100-80gb" and '
        'gpu_count = 1, or machine_type = "a2-highgpu-1g" for 1 nvidia-tesla-a100.',
    ),
    "two-l4s-on-g2-standard-4": (
        {"machine_type": "g2-standard-4", "gpu_type": "nvidia-l4", "gpu_count": 2},
        "machine_type g2-standard-4 comes with 1 nvidia-l4: set gpu_count = 1, or machine_type = "
        '"g2-standard-24" for 2 nvidia-l4.',
    ),
    "one-a100-on-a2-highgpu-8g": (
        {"machine_type": "a2-highgpu-8g", "gpu_type": "nvidia-tesla-a100", "gpu_count": 1},
        "machine_type a2-highgpu-8g comes with 8 nvidia-tesla-a100: set gpu_count = 8, or machine_type = "
        '"a2-highgpu-1g" for 1 nvidia-tesla-a100.',
    ),
    "sixteen-l4s": (
        {"machine_type": "g2-standard-96", "gpu_type": "nvidia-l4", "gpu_count": 16},
        "machine_type g2-standard-96 comes with 8 nvidia-l4: set gpu_count = 8, or a machine_type with "
        "nvidia-l4: g2-standard-4 (1), g2-standard-8 (1), g2-standard-12 (1), g2-standard-16 (1), "
        "g2-standard-32 (1), g2-standard-24 (2), g2-standard-48 (4), g2-standard-96 (8).",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_gpu_the_machine_type_does_not_have_is_refused_with_the_fix(planner, case):
    variables, message = REFUSED[case]
    text = refusal(planner, variables)
    assert "Resource precondition failed" in text, text[-1500:]
    assert message in text, text[-1500:]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"machine_type": "g2-standard-2"}, "machine_type must be an N1 type"),
        ({"machine_type": "a2-highgpu-3g"}, "machine_type must be an N1 type"),
        ({"gpu_type": "nvidia-h100-80gb"}, "gpu_type must be one of"),
        ({"gpu_count": 3}, "gpu_count must be 1, 2 or 4 (N1), or 8 or 16"),
    ],
    ids=["g2-standard-2", "a2-highgpu-3g", "h100", "three-gpus"],
)
def test_an_unknown_machine_type_gpu_type_or_count_is_refused_by_its_variable(planner, variables, message):
    text = refusal(planner, variables)
    assert "Invalid value for variable" in text and message in text, text[-1500:]


def test_the_price_tables_built_in_gpus_are_the_modules_and_each_is_priced(planner):
    """ops/prices.py prices a planned G2 / A2 VM (no guest_accelerator) by the GPUs its machine type
    comes with: its table must be the module's (locals.tf), read here by `terraform console`."""
    done = subprocess.run(
        [planner.binary, "console", *planner.var_args(BASE_VARS)], input="jsonencode(local.built_in_gpus)\n",
        cwd=planner.workdir, env=planner.env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    module = {m: (g["type"], g["count"]) for m, g in json.loads(json.loads(done.stdout)).items()}
    assert module == prices.BUILT_IN_GPUS
    assert module["g2-standard-24"] == ("nvidia-l4", 2) and module["a2-megagpu-16g"] == (
        "nvidia-tesla-a100",
        16,
    )
    for machine_type, (gpu_type, _) in module.items():
        assert machine_type in prices.MACHINES and gpu_type in prices.GPUS, machine_type
