"""Plan, apply, outputs, inventory and infra-down: real Terraform over infra/, offline.

What stands in for GCP: the stand-in google provider (tests/standins/tf_harness.py,
tests/standins/google_provider/), generated from hashicorp/google 6.50.0's schema, and its cloud file
(what exists, what apply answers: the VM's address, ids, self links; which creates fail with GCP's
messages). Terraform, the module and the laptop package's verbs (python -m ops) are the real ones.
What the stand-in cannot check (the provider's own validations, API errors it is not told to make,
IAM, quotas, defaults chosen by the server) is listed in tests/standins/google_provider/__init__.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.terraform import Terraform as OpsTerraform
from tests.standins.tf_harness import BASE_VARS, INFRA, Terraform, TerraformError
from tests.support import ROOT

pytestmark = pytest.mark.terraform

FIXTURE_OUTPUTS = ROOT / "tests" / "fixtures" / "terraform_output.json"
STAND_IN_VM = "127.0.0.2"  # the address the stand-in VM of the cloud tests listens on
KEY = str(INFRA / "tests" / "fixtures" / "id_test.pub")
VM = "google_compute_instance"


@pytest.fixture(scope="module")
def planner(stand_in_google, tmp_path_factory) -> Terraform:
    tf = stand_in_google.terraform(tmp_path_factory.mktemp("plan"))
    tf.init()
    return tf


@pytest.fixture
def tf(stand_in_google, tmp_path) -> Terraform:
    tf = stand_in_google.terraform(tmp_path / "infra")
    tf.init()
    return tf


def changes(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """address -> {"actions", "after"} of a `terraform show -json` plan."""
    return {
        c["address"]: {"actions": c["change"]["actions"], "after": c["change"]["after"]}
        for c in plan["resource_changes"]
    }


def planned_outputs(plan: dict[str, Any]) -> dict[str, Any]:
    return {name: o.get("value") for name, o in plan["planned_values"].get("outputs", {}).items()}


# ---- plans --------------------------------------------------------------------------------------


def test_plan_of_the_example_tfvars_creates_one_t4_vm_its_disk_network_and_bucket(planner):
    plan = planner.plan({"ssh_public_key_path": KEY}, "-var-file=terraform.tfvars.example")
    found = changes(plan)
    assert all(c["actions"] == ["create"] for c in found.values())
    assert {a.split("[")[0] for a in found} == {
        "google_project_service.apis", "google_compute_network.trainer", "google_compute_subnetwork.trainer",
        "google_compute_firewall.ssh", "google_compute_disk.data", "google_compute_instance.trainer",
        "google_service_account.trainer", "google_storage_bucket.artifacts",
        "google_storage_bucket_iam_member.trainer_objects", "google_project_iam_member.trainer_log_writer",
    }  # fmt: skip
    vm = found["google_compute_instance.trainer[0]"]["after"]
    assert vm["machine_type"] == "n1-standard-4" and vm["zone"] == "us-central1-a"
    assert vm["guest_accelerator"] == [{"type": "nvidia-tesla-t4", "count": 1}]
    scheduling = vm["scheduling"][0]
    # The example's first offer: a T4 spot (the ones after it: tests/cloud/test_offers.py).
    assert scheduling["on_host_maintenance"] == "TERMINATE" and scheduling["provisioning_model"] == "SPOT"
    assert scheduling["max_run_duration"] == [{"seconds": 43200, "nanos": None}]
    assert vm["metadata"]["ssh-keys"].startswith("trainer:ssh-ed25519 ")
    assert found["google_compute_firewall.ssh"]["after"]["source_ranges"] == ["203.0.113.7/32"]
    bucket = found["google_storage_bucket.artifacts"]["after"]
    assert bucket["name"] == "my-gcp-project-tweet-trainer" and bucket["location"] == "US-CENTRAL1"
    assert bucket["force_destroy"] is False
    outputs = planned_outputs(plan)
    assert outputs["instance_name"] == "tweet-trainer" and outputs["gpu_count"] == 1
    assert plan["output_changes"]["external_ip"]["after_unknown"] is True  # known after apply


def test_plan_of_a_spot_vm(planner):
    vm = changes(planner.plan({"spot": True}))["google_compute_instance.trainer[0]"]["after"]
    scheduling = vm["scheduling"][0]
    assert scheduling["provisioning_model"] == "SPOT" and scheduling["preemptible"] is True
    assert scheduling["automatic_restart"] is False and scheduling["instance_termination_action"] == "STOP"
    assert scheduling["on_host_maintenance"] == "TERMINATE"


def test_plan_of_a_four_gpu_vm(planner):
    plan = planner.plan({"gpu_count": 4, "machine_type": "n1-standard-16"})
    vm = changes(plan)["google_compute_instance.trainer[0]"]["after"]
    assert vm["guest_accelerator"] == [{"type": "nvidia-tesla-t4", "count": 4}]
    assert vm["machine_type"] == "n1-standard-16" and planned_outputs(plan)["gpu_count"] == 4


def test_plan_of_three_nodes_with_two_gpus_each(planner):
    plan = planner.plan({"node_count": 3, "gpu_count": 2})
    found = changes(plan)
    names = [found[f"google_compute_instance.trainer[{i}]"]["after"]["name"] for i in range(3)]
    assert names == ["tweet-trainer-0", "tweet-trainer-1", "tweet-trainer-2"]
    disks = [found[f"google_compute_disk.data[{i}]"]["after"]["name"] for i in range(3)]
    assert disks == ["tweet-trainer-data-0", "tweet-trainer-data-1", "tweet-trainer-data-2"]
    internal = found["google_compute_firewall.internal[0]"]["after"]
    assert internal["source_tags"] == internal["target_tags"] == ["tweet-trainer-node"]
    assert planned_outputs(plan)["instance_names"] == names and planned_outputs(plan)["node_count"] == 3


def test_plan_refuses_a_validation_failure_with_its_message(planner):
    with pytest.raises(TerraformError) as failed:
        planner.plan({"ssh_source_ranges": ["0.0.0.0/0"]})
    assert "ssh_source_ranges must not open SSH to the whole internet" in " ".join(
        failed.value.output.split()
    )


# ---- data_read_buckets: read-only access to other buckets for DATA=gs://other-bucket/... -----------

DATA_READ = "google_storage_bucket_iam_member.data_read"
VM_ACCOUNT = "serviceAccount:tweet-trainer-vm@stand-in-project.iam.gserviceaccount.com"


def test_plan_grants_no_other_bucket_by_default(planner):
    plan = planner.plan()
    assert not [a for a in changes(plan) if a.startswith(DATA_READ)]
    assert planned_outputs(plan)["data_read_buckets"] == []


def test_plan_grants_object_viewer_on_each_listed_bucket_to_the_vm_account(planner):
    plan = planner.plan({"data_read_buckets": ["other-bucket", "shared.data.example.com", "other-bucket"]})
    found = {a: c for a, c in changes(plan).items() if a.startswith(DATA_READ)}
    assert set(found) == {f'{DATA_READ}["other-bucket"]', f'{DATA_READ}["shared.data.example.com"]'}
    for address, change in found.items():
        assert change["actions"] == ["create"], address
        assert change["after"]["role"] == "roles/storage.objectViewer", address
        assert change["after"]["bucket"] == address.split('"')[1]
    # The member is the VM's service account, known after apply (its email comes from GCP).
    after_unknown = {c["address"]: c["change"]["after_unknown"] for c in plan["resource_changes"]}
    assert after_unknown[f'{DATA_READ}["other-bucket"]']["member"] is True
    assert planned_outputs(plan)["data_read_buckets"] == ["other-bucket", "shared.data.example.com"]


def test_plan_leaves_the_vms_own_bucket_out_of_the_read_grants(planner):
    plan = planner.plan({"data_read_buckets": ["stand-in-project-tweet-trainer"]})
    assert not [a for a in changes(plan) if a.startswith(DATA_READ)]
    assert planned_outputs(plan)["data_read_buckets"] == []


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        (["gs://other-bucket"], "data_read_buckets lists bucket names, not gs:// URLs or paths"),
        (["other-bucket/tweets"], 'write data_read_buckets = ["other-bucket"] in infra/terraform.tfvars'),
        (["Other-Bucket"], 'each entry must be a GCS bucket name such as "other-bucket"'),
        (["ab"], "each entry must be a GCS bucket name"),
        (["google-data"], "not containing google"),
        (["192.168.0.1"], "not an IP address"),
        (["a" * 64], "63 between dots"),
    ],
    ids=["gs-url", "path", "upper-case", "too-short", "google", "ip-address", "too-long"],
)
def test_plan_refuses_a_data_read_bucket_that_is_not_a_bucket_name(planner, buckets, message):
    with pytest.raises(TerraformError) as failed:
        planner.plan({"data_read_buckets": buckets})
    output = " ".join(failed.value.output.split())
    assert "Invalid value for variable" in output and message in output, output[-2000:]


def test_apply_grants_the_vm_account_read_access_and_infra_down_removes_it(tf, tmp_path):
    buckets = ["other-bucket", "shared-data"]
    tf.apply({"data_read_buckets": buckets})
    assert tf.output()["data_read_buckets"] == {"value": buckets, "type": ["list", "string"],
                                                "sensitive": False}  # fmt: skip
    grants = {
        (g["bucket"], g["role"], g["member"]) for g in tf.cloud.resources("google_storage_bucket_iam_member")
    }
    assert grants == {
        ("stand-in-project-tweet-trainer", "roles/storage.objectAdmin", VM_ACCOUNT),
        ("other-bucket", "roles/storage.objectViewer", VM_ACCOUNT),
        ("shared-data", "roles/storage.objectViewer", VM_ACCOUNT),
    }
    # A bucket dropped from the list loses its grant; the other one stays.
    tf.apply({"data_read_buckets": ["shared-data"]})
    assert tf.output()["data_read_buckets"]["value"] == ["shared-data"]
    assert [g["bucket"] for g in tf.cloud.resources("google_storage_bucket_iam_member")
            if g["role"] == "roles/storage.objectViewer"] == ["shared-data"]  # fmt: skip
    # infra-down destroys the grants with the service account they name; the bucket and APIs stay.
    infra_down(tf, tmp_path, data_read_buckets=["shared-data"])
    assert {address.split("[")[0] for address in tf.state_list()} == {
        "google_project_service.apis",
        "google_storage_bucket.artifacts",
    }
    assert tf.cloud.resources("google_storage_bucket_iam_member") == []


# ---- apply -> outputs -> inventory ----------------------------------------------------------------


def inventory(tf: Terraform, out: Path, *source: str) -> dict[str, Any]:
    """`python -m ops inventory` as `make inventory` runs it: it calls `terraform output -json` itself
    (or reads `--from FILE` when `source` says so)."""
    done = subprocess.run(
        [sys.executable, "-m", "ops", "inventory", *source], capture_output=True, text=True, cwd=ROOT,
        env={**tf.env, "INFRA_DIR": str(tf.workdir), "INVENTORY": str(out), "SSH_KEY": "/keys/id_ed25519",
             "TERRAFORM": tf.binary},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(out.read_text())


def test_apply_gives_the_outputs_the_inventory_and_the_playbook_expect(tf, tmp_path):
    tf.cloud.instance_address("tweet-trainer", STAND_IN_VM)
    tf.apply()
    outputs = tf.output()
    expected = json.loads(FIXTURE_OUTPUTS.read_text())
    # The recorded deployment's outputs, in the same types, plus those added since (make watch's, and
    # where the nodes of a multi-node run meet).
    assert {n: o["type"] for n, o in outputs.items() if n in expected} == {
        n: o["type"] for n, o in expected.items()
    }
    assert set(outputs) - set(expected) == {
        "zones",
        "instance_status",
        "main_process_address",
        "rendezvous_port",
        "price_inputs",
        "data_read_buckets",
    }
    values = {name: o["value"] for name, o in outputs.items()}
    assert values["external_ip"] == STAND_IN_VM and values["external_ips"] == [STAND_IN_VM]
    assert values["internal_ips"] == ["10.42.0.2"]  # the first address of subnet_cidr's hosts
    assert values["bucket_url"] == "gs://stand-in-project-tweet-trainer"
    assert values["service_account_email"] == "tweet-trainer-vm@stand-in-project.iam.gserviceaccount.com"
    assert values["zones"] == ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
    assert values["instance_status"] == "RUNNING"
    assert values["data_read_buckets"] == []  # only its own bucket by default
    hosts = inventory(tf, tmp_path / "hosts.yml")["trainer"]["hosts"]
    # The same host variables as the inventory made from the recorded outputs of a real deployment.
    (reference,) = inventory(tf, tmp_path / "reference.yml", "--from", str(FIXTURE_OUTPUTS))["trainer"][
        "hosts"
    ].values()
    assert list(hosts) == ["tweet-trainer"] and set(hosts["tweet-trainer"]) == set(reference)
    assert (
        hosts["tweet-trainer"]
        | {
            "ansible_host": STAND_IN_VM,
            "ansible_user": "trainer",
            "trainer_host_data_disk_device": "trainer-data",
            "trainer_bucket_url": "gs://stand-in-project-tweet-trainer",
            "trainer_host_gpu_count": 1,
        }
        == hosts["tweet-trainer"]
    )
    # A second plan changes nothing: what apply stored is what the configuration asks for.
    assert tf.run("plan", "-input=false", "-no-color", "-detailed-exitcode",
                  *tf.var_args(BASE_VARS)).returncode == 0  # fmt: skip


def test_apply_of_two_nodes_puts_both_in_the_inventory(tf, tmp_path):
    tf.cloud.instance_address("tweet-trainer-0", "127.0.0.2")
    tf.cloud.instance_address("tweet-trainer-1", "127.0.0.3")
    tf.apply({"node_count": 2, "gpu_count": 2})
    values = {name: o["value"] for name, o in tf.output().items()}
    assert values["external_ips"] == ["127.0.0.2", "127.0.0.3"]
    assert sorted(values["internal_ips"]) == ["10.42.0.2", "10.42.0.3"]  # in the order GCE creates them
    hosts = inventory(tf, tmp_path / "hosts.yml")["trainer"]["hosts"]
    assert {name: h["ansible_host"] for name, h in hosts.items()} == {
        "tweet-trainer-0": "127.0.0.2",
        "tweet-trainer-1": "127.0.0.3",
    }
    assert {h["trainer_host_gpu_count"] for h in hosts.values()} == {2}


# ---- infra-down ---------------------------------------------------------------------------------


def infra_down(tf: Terraform, tmp_path: Path, **variables: Any) -> None:
    """`make infra-down`'s destroy (ops.terraform: `python -m ops down` after its credentials check)
    with the user's tfvars, approved."""
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**BASE_VARS, **variables}.items()))
    OpsTerraform(tf.workdir, tfvars, tf.binary, env=dict(tf.env)).down(
        keep_data_disk=False, auto_approve=True
    )


def test_infra_down_destroys_the_vm_side_and_keeps_the_bucket_with_the_models(tf, tmp_path):
    tf.cloud.bucket_not_empty("stand-in-project-tweet-trainer")
    tf.apply()
    infra_down(tf, tmp_path)
    kept = {address.split("[")[0] for address in tf.state_list()}
    assert kept == {"google_project_service.apis", "google_storage_bucket.artifacts"}
    assert tf.cloud.names("google_storage_bucket") == ["stand-in-project-tweet-trainer"]
    assert tf.cloud.resources(VM) == [] and tf.cloud.resources("google_compute_disk") == []


def test_infra_down_with_force_destroy_deletes_the_bucket_too(tf, tmp_path):
    tf.cloud.bucket_not_empty("stand-in-project-tweet-trainer")
    tf.apply({"force_destroy": True})
    infra_down(tf, tmp_path, force_destroy=True)
    assert {address.split("[")[0] for address in tf.state_list()} == {"google_project_service.apis"}
    assert tf.cloud.resources("google_storage_bucket") == []


def test_a_bucket_with_objects_is_not_deleted_without_force_destroy(tf):
    tf.cloud.bucket_not_empty("stand-in-project-tweet-trainer")
    tf.apply()
    with pytest.raises(TerraformError) as failed:
        tf.destroy()
    assert "containing objects without `force_destroy` set to true" in failed.value.output
    assert tf.cloud.names("google_storage_bucket") == ["stand-in-project-tweet-trainer"]


# ---- GCP's answers for later tests: stock-outs, preemption ---------------------------------------


def test_a_zonal_stock_out_fails_the_vm_and_another_zone_gets_it(tf):
    tf.cloud.stock_out("us-central1-a")
    with pytest.raises(TerraformError) as failed:
        tf.apply()
    message = " ".join(failed.value.output.split())
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in message
    assert (
        "The zone 'projects/stand-in-project/zones/us-central1-a' does not have enough resources" in message
    )
    assert not any(a.startswith(VM) for a in tf.state_list()) and tf.cloud.resources(VM) == []
    tf.apply({"zone": "us-central1-b"})  # the data disk is replaced: a zone cannot change in place
    (vm,) = tf.cloud.resources(VM)
    assert vm["zone"] == "us-central1-b" and vm["current_status"] == "RUNNING"
    assert [d["zone"] for d in tf.cloud.resources("google_compute_disk")] == ["us-central1-b"]


def test_a_gpu_quota_error_names_the_quota(tf):
    tf.cloud.quota_exceeded("us-central1")
    with pytest.raises(TerraformError) as failed:
        tf.apply()
    assert "Quota 'NVIDIA_T4_GPUS' exceeded." in failed.value.output


def test_a_preempted_vm_is_seen_terminated_at_the_next_refresh(tf):
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")
    tf.apply(None, "-refresh-only")
    state = json.loads(tf.run("show", "-json", "-no-color").stdout)
    (vm,) = [r for r in state["values"]["root_module"]["resources"] if r["type"] == VM]
    assert vm["values"]["current_status"] == "TERMINATED"


def test_converging_brings_a_preempted_vm_back_with_a_new_address(tf):
    """The module's desired_status (RUNNING by default) starts a preempted VM again through plan and
    apply, and the outputs carry the address it has now, not the one it had."""
    tf.cloud.instance_address("tweet-trainer", STAND_IN_VM)
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.9")  # an ephemeral address changes on restart
    plan = changes(tf.plan())["google_compute_instance.trainer[0]"]
    assert plan["actions"] == ["update"]  # started in place: the disks and the VM stay
    tf.apply()
    outputs = tf.output()
    assert outputs["external_ip"]["value"] == "127.0.0.9" and outputs["instance_status"]["value"] == "RUNNING"
    assert [vm["current_status"] for vm in tf.cloud.resources(VM)] == ["RUNNING"]


def test_a_refresh_shows_a_preempted_vm_and_desired_status_stops_one(tf):
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")
    tf.apply(None, "-refresh-only")
    assert tf.output()["instance_status"]["value"] == "TERMINATED"
    tf.apply({"desired_status": "TERMINATED"})  # stopped on purpose: nothing to change
    assert [vm["current_status"] for vm in tf.cloud.resources(VM)] == ["TERMINATED"]
    tf.apply()
    assert [vm["current_status"] for vm in tf.cloud.resources(VM)] == ["RUNNING"]


# ---- changes that replace the VM -----------------------------------------------------------------


def vm_change(plan: dict[str, Any]) -> dict[str, Any]:
    (change,) = [c for c in plan["resource_changes"] if c["address"] == f"{VM}.trainer[0]"]
    return change


@pytest.mark.parametrize(
    ("before", "after", "forces"),
    [
        ({"spot": False}, {"spot": True}, ["scheduling", 0, "provisioning_model"]),
        ({"spot": True}, {"spot": False}, ["scheduling", 0, "preemptible"]),
        (
            {"spot": True, "max_run_duration_hours": 0},
            {"spot": True, "max_run_duration_hours": 2},
            ["scheduling", 0, "max_run_duration"],
        ),
        (
            {"max_run_duration_hours": 12},
            {"max_run_duration_hours": 2},
            ["scheduling", 0, "max_run_duration", 0, "seconds"],
        ),
        ({"gpu_count": 1}, {"gpu_count": 2}, ["guest_accelerator", 0, "count"]),
    ],
    ids=["to-spot", "to-standard", "add-run-duration", "change-run-duration", "gpu-count"],
)
def test_a_scheduling_or_gpu_change_replaces_the_vm_and_keeps_the_data_disk_and_bucket(
    tf, before, after, forces
):
    """The google provider marks these ForceNew (see values.FORCE_NEW): Terraform destroys the VM and
    creates a new one, with a new boot disk; the data disk and the bucket are other resources and stay."""
    tf.apply(before)
    (old,) = tf.cloud.resources(VM)
    kept = {rtype: tf.cloud.resources(rtype) for rtype in ("google_compute_disk", "google_storage_bucket")}
    plan = tf.plan(after)
    change = vm_change(plan)
    assert change["change"]["actions"] == ["delete", "create"]
    assert forces in change["change"]["replace_paths"]
    others = {c["address"]: c["change"]["actions"] for c in plan["resource_changes"] if c is not change}
    assert all(actions == ["no-op"] for actions in others.values()), others
    shown = tf.run("show", "-no-color", "tfplan").stdout
    assert "google_compute_instance.trainer[0] must be replaced" in shown and "# forces replacement" in shown
    tf.apply(after)
    (new,) = tf.cloud.resources(VM)
    assert new["instance_id"] != old["instance_id"]  # GCE's numeric id of a new instance
    assert {rtype: tf.cloud.resources(rtype) for rtype in kept} == kept  # the same disk, the same bucket
    assert new["attached_disk"][0]["source"] == kept["google_compute_disk"][0]["id"]


def test_a_machine_type_change_keeps_the_vm(tf):
    """machine_type is not ForceNew: the provider stops the VM (allow_stopping_for_update), changes it
    and starts it again; the same instance, nothing to provision."""
    tf.apply()
    (old,) = tf.cloud.resources(VM)
    assert vm_change(tf.plan({"machine_type": "n1-standard-8"}))["change"]["actions"] == ["update"]
    tf.apply({"machine_type": "n1-standard-8"})
    (new,) = tf.cloud.resources(VM)
    assert new["instance_id"] == old["instance_id"] and new["machine_type"] == "n1-standard-8"
