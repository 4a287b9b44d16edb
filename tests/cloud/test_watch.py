"""`make watch`'s script (scripts/cloud_watch.py): converging through preemptions and GPU stock-outs.

What stands in for GCP: the stand-in google provider and its cloud file (tests/standins/tf_harness.py),
which answers a create in a stocked-out zone with GCE's real ZONE_RESOURCE_POOL_EXHAUSTED message,
reports a "preempted" VM as TERMINATED at the next refresh and gives a restarted VM a new ephemeral
address; the bucket is the GCS emulator on loopback. Real: Terraform over infra/, the script, the
inventory it refreshes (scripts/make_inventory.py), the manifest check through the project's
google-cloud-storage client. The run itself is a stand-in command given after `--` (the real one is
scripts/tf_cloud.sh's, tested by the cloud verbs' tests): it writes the manifest, or nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cloud.conftest import emulator_client
from tests.standins.tf_harness import BASE_VARS, Terraform
from tests.support import ROOT

pytestmark = pytest.mark.terraform

SCRIPT = ROOT / "scripts" / "cloud_watch.py"
VM = "google_compute_instance"
BUCKET = "stand-in-project-tweet-trainer"
RUN = "r1"


@pytest.fixture
def tf(stand_in_google, tmp_path) -> Terraform:
    tf = stand_in_google.terraform(tmp_path / "infra")
    tf.init()
    return tf


@pytest.fixture
def bucket(gcs_emulator):
    """The module's bucket, empty; the emulator is shared by the session (the cloud verbs' tests use the
    same bucket name), so an existing one is emptied rather than created again, and left as found."""
    gcs = emulator_client(gcs_emulator)
    created = gcs.lookup_bucket(BUCKET) is None
    if created:
        gcs.create_bucket(BUCKET)
    for blob in gcs.list_blobs(BUCKET):
        blob.delete()
    yield gcs.bucket(BUCKET)
    for blob in gcs.list_blobs(BUCKET):
        blob.delete()
    if created:
        gcs.bucket(BUCKET).delete()


def tfvars(tmp_path: Path, **variables) -> Path:
    path = tmp_path / "terraform.tfvars"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**BASE_VARS, **variables}.items()))
    return path


def finish_run() -> list[str]:
    """A stand-in for the run on the VM that finishes: the trainer's manifest lands in the bucket."""
    code = (
        "from trainer.bucket import client; "
        f"client().bucket('{BUCKET}').blob('runs/{RUN}/manifest.json').upload_from_string('{{}}')"
    )
    return [sys.executable, "-c", code]


def cloud_watch(tf: Terraform, tmp_path: Path, gcs_url: str, *args: str, variables=None):
    env = {**tf.env, "STORAGE_EMULATOR_HOST": gcs_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--infra-dir", str(tf.workdir),
         "--tfvars", str(tfvars(tmp_path, **(variables or {}))), *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip


def watch(tf, tmp_path, gcs_url, *start: str, attempts: int = 3):
    inventory = tmp_path / "hosts.yml"
    make_inventory = (
        f"{sys.executable} {ROOT / 'scripts' / 'make_inventory.py'} --infra-dir {tf.workdir} "
        f"--out {inventory} --ssh-key /keys/id_ed25519"
    )
    provision = f"touch {tmp_path / 'provisioned'}"
    return cloud_watch(
        tf, tmp_path, gcs_url, "watch", RUN, "--attempts", str(attempts), "--sleep", "0",
        "--inventory", make_inventory, "--provision", provision, "--", *start,
    )  # fmt: skip


def lines(done: subprocess.CompletedProcess, prefix: str = "watch: ") -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith(prefix)]


def test_a_stock_out_in_the_first_zone_moves_the_vm_to_the_second(tf, tmp_path, gcs_emulator, bucket):
    tf.cloud.stock_out("us-central1-a")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    done = watch(tf, tmp_path, gcs_emulator, *finish_run())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    said = lines(done)
    assert said[1] == (
        "watch: terraform apply in us-central1-a (zone 1 of 4: us-central1-a, us-central1-b, us-central1-c, "
        "us-central1-f)"
    )
    assert said[2].startswith("watch: us-central1-a has no capacity (Error: Error waiting for instance to "
                              "create: ZONE_RESOURCE_POOL_EXHAUSTED")  # fmt: skip
    assert said[2].endswith("moving to us-central1-b (a new data disk there; the bucket keeps checkpoints)")
    assert said[3].startswith("watch: terraform apply in us-central1-b (zone 2 of 4")
    assert "watch: tweet-trainer is RUNNING in us-central1-b at 127.0.0.2" in said
    assert said[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"
    (vm,) = tf.cloud.resources(VM)
    assert vm["zone"] == "us-central1-b"
    assert [d["zone"] for d in tf.cloud.resources("google_compute_disk")] == ["us-central1-b"]
    # A new VM is provisioned before the run starts; the inventory has its address.
    assert (tmp_path / "provisioned").exists()
    (host,) = yaml.safe_load((tmp_path / "hosts.yml").read_text())["trainer"]["hosts"].values()
    assert host["ansible_host"] == "127.0.0.2"
    # The zone is remembered: a later plain apply keeps the VM where it is.
    assert json.loads((tf.workdir / "zone.auto.tfvars.json").read_text()) == {"zone": "us-central1-b"}
    plan = tf.run(
        "plan", "-input=false", "-no-color", "-detailed-exitcode", *tf.var_args(BASE_VARS), check=False
    )
    assert plan.returncode == 0, plan.stdout[-2000:]


def test_a_preempted_vm_is_started_again_and_the_run_restarted_at_its_new_address(
    tf, tmp_path, gcs_emulator, bucket
):
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")  # preempted
    tf.cloud.instance_address("tweet-trainer", "127.0.0.9")  # a restarted VM gets another address
    done = watch(tf, tmp_path, gcs_emulator, *finish_run())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    said = lines(done)
    assert "watch: tweet-trainer is RUNNING in us-central1-a at 127.0.0.9" in said
    assert [vm["current_status"] for vm in tf.cloud.resources(VM)] == ["RUNNING"]
    assert tf.output()["external_ip"]["value"] == "127.0.0.9"
    (host,) = yaml.safe_load((tmp_path / "hosts.yml").read_text())["trainer"]["hosts"].values()
    assert host["ansible_host"] == "127.0.0.9"  # SSH goes to the new address, never the stale one
    assert not (tmp_path / "provisioned").exists()  # the same VM and disks: nothing to provision
    assert not (tf.workdir / "zone.auto.tfvars.json").exists()
    assert said[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"


def test_a_finished_run_is_left_alone(tf, tmp_path, gcs_emulator, bucket):
    bucket.blob(f"runs/{RUN}/manifest.json").upload_from_string("{}")
    done = watch(tf, tmp_path, gcs_emulator, "false")
    assert done.returncode == 0, done.stderr
    assert not any(line.startswith(f"watch: run {RUN}: ") for line in lines(done))  # never started


def test_attempts_are_bounded_and_end_in_one_error_line(tf, tmp_path, gcs_emulator, bucket):
    done = watch(tf, tmp_path, gcs_emulator, "true", attempts=2)
    assert done.returncode == 1
    said = lines(done)
    assert [line for line in said if line.startswith("watch: attempt ")] == [
        f"watch: attempt 1 of 2 for run {RUN}",
        f"watch: attempt 2 of 2 for run {RUN}",
    ]
    assert said.count("watch: the run command exited 0") == 2
    assert done.stderr == (
        f"error: run {RUN} is not finished after 2 attempts (no gs://{BUCKET}/runs/{RUN}/manifest.json): "
        f"see its log (make logs RUN={RUN}), then make watch RUN={RUN} again\n"
    )


def test_every_zone_out_of_stock_ends_the_converge(tf, tmp_path, gcs_emulator):
    for zone in ("us-central1-c", "us-central1-f"):
        tf.cloud.stock_out(zone)
    done = cloud_watch(
        tf, tmp_path, gcs_emulator, "converge", "--auto-approve",
        variables={"zone": "us-central1-c", "fallback_zones": ["us-central1-f"]},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        "error: every zone is out of capacity (us-central1-c, us-central1-f): try again later, or set zone "
        f"and fallback_zones in {tmp_path / 'terraform.tfvars'} to another region's zones\n"
    )
    assert "watch: us-central1-f has no capacity (" in done.stdout and "no zone left" in done.stdout
    assert tf.cloud.resources(VM) == []


def test_a_quota_error_is_not_a_stock_out(tf, tmp_path, gcs_emulator):
    tf.cloud.quota_exceeded("us-central1")
    done = cloud_watch(tf, tmp_path, gcs_emulator, "converge", "--auto-approve")
    assert done.returncode == 1
    assert done.stderr.startswith("error: terraform apply failed in us-central1-a: ")
    assert "Quota 'NVIDIA_T4_GPUS' exceeded." in done.stderr and len(done.stderr.splitlines()) == 1
    assert "terraform apply in us-central1-b" not in done.stdout  # the region's other zones share the quota


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch", "", "--", "true"], "error: which run? make watch RUN=<run name>"),
        (["watch", "a b", "--", "true"], "error: RUN='a b': use letters, digits"),
        (["watch", "r1", "--attempts", "0", "--", "true"], "error: WATCH_ATTEMPTS must be at least 1"),
        (["watch", "r1"], "error: no command to (re)start the run after --"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "terraform.tfvars").write_text("")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--infra-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1


def test_missing_tfvars_says_how_to_make_them(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--infra-dir", str(tmp_path), "converge"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {tmp_path}/terraform.tfvars not found: cp {tmp_path}/terraform.tfvars.example "
        f"{tmp_path}/terraform.tfvars and fill it in\n"
    )


def make_env(tf: Terraform, tmp_path: Path, gcs_url: str) -> tuple[dict[str, str], Path, Path]:
    """What a user's `make` of a cloud verb has: an SSH key, application-default credentials (a file
    the pre-flight check loads), the stand-in provider's Terraform; and where the inventory goes."""
    key, adc = tmp_path / "id_ed25519", tmp_path / "adc.json"
    key.write_text("a key file\n")
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                               "refresh_token": "r", "quota_project_id": "stand-in-project"}))  # fmt: skip
    env = {k: v for k, v in tf.env.items() if k not in ("SSH_PORT", "INFRA_DIR", "TFVARS", "AUTO_APPROVE")}
    env.update({"GOOGLE_APPLICATION_CREDENTIALS": str(adc), "NO_GCE_CHECK": "true",
                "STORAGE_EMULATOR_HOST": gcs_url})  # fmt: skip
    for name in ("PROVISION_COMMAND", "INVENTORY_COMMAND", "PROVISION_ALWAYS"):
        env.pop(name, None)
    return env, key, tmp_path / "hosts.yml"


def test_make_watch_brings_a_preempted_vm_back_and_restarts_the_run(tf, tmp_path, gcs_emulator, bucket):
    """The make target as a user runs it: preflight, init, then the script with the inventory rewritten
    by `make inventory` and the run (re)started by WATCH_START (here: a stand-in that finishes)."""
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.9")
    env, key, inventory = make_env(tf, tmp_path, gcs_emulator)
    finish = tmp_path / "finish.py"
    finish.write_text("\n".join(finish_run()[2].split("; ")) + "\n")
    done = subprocess.run(
        ["make", "--no-print-directory", "watch", f"RUN={RUN}", f"INFRA_DIR={tf.workdir}",
         f"TFVARS={tfvars(tmp_path)}", f"SSH_KEY={key}", f"INVENTORY={inventory}", "WATCH_SLEEP=0",
         f"WATCH_START={sys.executable} {finish}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = lines(done)
    assert "watch: tweet-trainer is RUNNING in us-central1-a at 127.0.0.9" in said
    assert said[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"
    (host,) = yaml.safe_load(inventory.read_text())["trainer"]["hosts"].values()
    assert host["ansible_host"] == "127.0.0.9" and host["ansible_ssh_private_key_file"] == str(key)


# ---- a VM made anew is provisioned before the verb says done ---------------------------------------


def recorder(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in for `make provision`: each call adds a line to a log, with the address the inventory
    holds then (provisioning must reach the new VM, so the inventory is written first)."""
    script, log = tmp_path / "record.py", tmp_path / "provisioned.log"
    script.write_text(
        "import sys\nfrom pathlib import Path\n"
        "hosts = [line.split()[-1].strip('\\'\"') for name in sys.argv[2:] if Path(name).is_file()\n"
        "         for line in Path(name).read_text().splitlines() if 'ansible_host:' in line]\n"
        "with open(sys.argv[1], 'a') as log:\n    log.write(' '.join(['provisioned', *hosts]) + '\\n')\n"
    )
    return f"{sys.executable} {script} {log} {tmp_path / 'hosts.yml'}", log


def provisioned(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_converge_provisions_a_vm_the_apply_made_anew_and_only_that_one(tf, tmp_path, gcs_emulator):
    """A first create and a replacement (spot is ForceNew in the google provider: Terraform destroys
    the VM and creates another, with a bare boot disk) are provisioned; an apply that keeps the VM is
    not. make infra-apply runs this converge."""
    provision, log = recorder(tmp_path)

    def converge(**variables) -> subprocess.CompletedProcess:
        done = cloud_watch(
            tf, tmp_path, gcs_emulator, "converge", "--auto-approve", "--provision", provision,
            variables=variables,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        return done

    done = converge(spot=False)
    assert "watch: provisioning the new VM: " in "\n".join(lines(done))
    assert provisioned(log) == ["provisioned"]
    (first,) = tf.cloud.resources(VM)
    done = converge(spot=False)  # nothing to change: the same VM, already provisioned
    assert lines(done)[-1] == (
        "watch: the VM was there before: not provisioned again (make provision re-runs the playbook)"
    )
    assert provisioned(log) == ["provisioned"]
    done = converge(spot=True)
    assert "google_compute_instance.trainer[0] must be replaced" in done.stdout
    assert provisioned(log) == ["provisioned", "provisioned"]
    (second,) = tf.cloud.resources(VM)
    assert second["instance_id"] != first["instance_id"]
    assert second["scheduling"][0]["provisioning_model"] == "SPOT"


def test_a_failed_provisioning_says_to_run_make_provision(tf, tmp_path, gcs_emulator):
    """The next apply keeps the VM and would not provision it: the error says what to run."""
    done = cloud_watch(tf, tmp_path, gcs_emulator, "converge", "--auto-approve", "--provision", "false")
    assert done.returncode == 1
    assert done.stderr == "error: provisioning the new VM failed (see above): fix it, then make provision\n"


def test_make_infra_apply_provisions_a_replaced_vm_and_infra_up_any_vm(tf, tmp_path, gcs_emulator):
    """The make targets as a user runs them, with PROVISION_COMMAND standing in for `make provision`:
    infra-apply writes the inventory, then provisions the VM only when the apply replaced it; infra-up
    provisions whatever the apply did."""
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.instance_address("tweet-trainer", "127.0.0.5")  # a new VM gets another ephemeral address
    provision, log = recorder(tmp_path)
    env, key, inventory = make_env(tf, tmp_path, gcs_emulator)

    def make(target: str, **variables) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["make", "--no-print-directory", target, f"INFRA_DIR={tf.workdir}", "AUTO_APPROVE=1",
             f"TFVARS={tfvars(tmp_path, **variables)}", f"SSH_KEY={key}", f"INVENTORY={inventory}",
             f"PROVISION_COMMAND={provision}"],
            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    make("infra-apply", spot=True)
    assert provisioned(log) == ["provisioned 127.0.0.5"]  # the replaced VM, at its new address
    done = make("infra-apply", spot=True)
    assert provisioned(log) == ["provisioned 127.0.0.5"]  # nothing changed: not again
    assert "watch: the VM was there before: not provisioned again" in done.stdout
    (host,) = yaml.safe_load(inventory.read_text())["trainer"]["hosts"].values()
    assert host["ansible_host"] == "127.0.0.5"
    done = make("infra-up", spot=True)
    assert provisioned(log) == ["provisioned 127.0.0.5"] * 2  # once, though the VM was kept
    assert "watch: provisioning the VM: " in done.stdout


def load_script():
    """scripts/cloud_watch.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("cloud_watch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


NOT_ENOUGH = "does not have enough resources available to fulfill the request."
MESSAGES = {
    "exhausted": f"Error: Error waiting for instance to create: ZONE_RESOURCE_POOL_EXHAUSTED: The zone "
    f"'projects/p/zones/us-central1-a' {NOT_ENOUGH}",
    "with-details": "Error: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone "
    f"'projects/p/zones/us-central1-b' {NOT_ENOUGH} '(resource type:compute)'.",
    "googleapi-503": f"│ Error: Error creating instance: googleapi: Error 503: The zone "
    f"'projects/p/zones/us-central1-c' {NOT_ENOUGH}  Try a different zone, or try again later.",
    "quota": "Error: Error waiting for instance to create: QUOTA_EXCEEDED: Quota 'NVIDIA_T4_GPUS' exceeded.",
    "permission": "Error: googleapi: Error 403: Required 'compute.instances.create' permission",
}


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_what_counts_as_a_stock_out(kind):
    found = load_script().stock_out(f"Plan: 1 to add\n{MESSAGES[kind]}\n")
    assert (found is not None) == (kind not in ("quota", "permission"))
    if found is not None:
        assert found.startswith("Error") and "│" not in found


def test_a_stock_out_with_details_moves_the_vm_too(tf, tmp_path, gcs_emulator):
    details = "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone 'projects/{project}/zones/{zone}' "
    tf.cloud.add_rule(VM, {"zone": "us-central1-a"}, create_error=f"{details}{NOT_ENOUGH}")
    done = cloud_watch(tf, tmp_path, gcs_emulator, "converge", "--auto-approve")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert (
        "watch: us-central1-a has no capacity (Error: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
        in done.stdout
    )
    assert lines(done)[-1].startswith("watch: tweet-trainer is RUNNING in us-central1-b at ")
