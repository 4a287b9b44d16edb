"""`make watch`, `make infra-apply`, `make infra-up` (ops.watch, ops.terraform, ops.__main__): converging
through preemptions and GPU stock-outs, and provisioning a VM the apply made anew.

What stands in for GCP: the stand-in google provider and its cloud file (tests/standins/tf_harness.py),
which answers a create in a stocked-out zone with GCE's real ZONE_RESOURCE_POOL_EXHAUSTED message,
reports a "preempted" VM as TERMINATED at the next refresh and gives a restarted VM a new ephemeral
address; the bucket is the GCS emulator on loopback. Real: Terraform over infra/, ops.terraform's apply
with the zone fallback, the inventory ops writes from the outputs (ops.inventory), the manifest check
through the project's google-cloud-storage client.

Most tests call ops in-process (`ops.watch.watch`, `ops.__main__.main`) with stand-ins for what needs a
VM: the run's start (a callable, or ops.runs.train monkeypatched: here it writes the manifest, or
nothing) and the playbook (Settings.provision monkeypatched to a recorder of the inventory's address).
The make targets run for real where the outcome is observable without a VM: `make infra-apply` and
`make infra-up` run the real ansible-playbook, made to fail at once on the inventory (an Ansible setting
from the environment), so whether and on which inventory the playbook ran shows in their output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import ops.runs
from ops import inventory
from ops.__main__ import Settings, main
from ops.offers import PLACEMENT_FILE, failure
from ops.terraform import Terraform as OpsTerraform
from ops.watch import watch
from tests.cloud.conftest import emulator_client
from tests.standins.compute_api import StandInCompute
from tests.standins.google_api import key_file
from tests.standins.tf_harness import BASE_VARS, Terraform
from tests.support import ROOT, TOOLS_BIN
from trainer.errors import UserError

pytestmark = pytest.mark.terraform

VM = "google_compute_instance"
BUCKET = "stand-in-project-tweet-trainer"
RUN = "r1"
# What ops reads from its environment; the test's own environment must not leak any of them in.
SETTINGS = ("INVENTORY", "SSH_KEY", "SSH_PORT", "TRAINER_VM_PROJECT_DIR", "TRAINER_VM_DATA_MOUNT",
            "INFRA_DIR", "TFVARS", "TERRAFORM", "AUTO_APPROVE", "KEEP_DATA_DISK", "DATA", "MODEL",
            "WATCH_ATTEMPTS", "WATCH_SLEEP", "RUN", "ARGS", "QUOTA_CHECK", "CONFIG",
            "TRAINER_COMPUTE_ENDPOINT", "TRAINER_BILLING_ENDPOINT")  # fmt: skip


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


@pytest.fixture
def compute():
    """The stand-in Compute Engine API (tests/standins/compute_api.py): GPU quota for one VM of every
    kind, spot or not, in the regions the offers below use, unless a test sets less."""
    api = StandInCompute()
    for region in ("us-central1", "us-east1"):
        for kind in ("T4", "L4", "A100"):
            api.set_quota(region, f"NVIDIA_{kind}_GPUS", limit=4)
            api.set_quota(region, f"PREEMPTIBLE_NVIDIA_{kind}_GPUS", limit=4)
    api.set_project_quota("GPUS_ALL_REGIONS", limit=8)
    yield api
    api.close()


@pytest.fixture
def laptop(tf, tmp_path, gcs_emulator, laptop_env, compute, monkeypatch) -> dict[str, str]:
    """What a user's `make` of a cloud verb has, as ops' environment: an SSH key, a Google login (a
    service account key the stand-in Compute API accepts; the bucket is the emulator's), the stand-in
    provider's Terraform in INFRA_DIR with TFVARS, the inventory's path, no prompts, no sleeping between
    attempts; the laptop's PATH (no GNU tools). This process's own environment is set to it too, for the
    in-process calls (restored after)."""
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    login = key_file(tmp_path / "login.json", compute.api)
    env = {k: v for k, v in tf.env.items() if k not in SETTINGS}
    env.update({
        "PATH": laptop_env["PATH"], "HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": str(login),
        "TRAINER_COMPUTE_ENDPOINT": compute.url, "TRAINER_BILLING_ENDPOINT": compute.url,
        "NO_GCE_CHECK": "true", "STORAGE_EMULATOR_HOST": gcs_emulator, "INFRA_DIR": str(tf.workdir),
        "TFVARS": str(tfvars(tmp_path)), "TERRAFORM": tf.binary, "SSH_KEY": str(key),
        "INVENTORY": str(tmp_path / "hosts.yml"), "AUTO_APPROVE": "1", "WATCH_SLEEP": "0",
    })  # fmt: skip
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def said(text: str, prefix: str = "watch: ") -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def host_in(path: Path) -> str:
    (host,) = yaml.safe_load(path.read_text())["trainer"]["hosts"].values()
    return host["ansible_host"]


def finish_run() -> None:
    """A stand-in for the run on the VM that finishes: the trainer's manifest lands in the bucket."""
    from trainer.gcs import client

    client().bucket(BUCKET).blob(f"runs/{RUN}/manifest.json").upload_from_string("{}")


def run_watch(laptop: dict, start: Callable[[], object], attempts: int = 3) -> tuple[int, list[str]]:
    """ops.watch.watch with ops' own Terraform and inventory writer (Settings from the environment), the
    given start, and a provisioning stand-in that records the address the inventory holds when it runs
    (provisioning must reach the new VM, so the inventory is written first)."""
    s = Settings(dict(os.environ))
    provisioned: list[str] = []

    def provision() -> None:
        provisioned.append(inventory.read(s.inventory, s.ssh_key).host)

    code = watch(s.terraform(), RUN, start, s.write_inventory, provision, attempts=attempts, sleep=0)
    return code, provisioned


T4 = "1 x nvidia-tesla-t4 (n1-standard-4), on demand"


def test_a_stock_out_in_the_first_zone_moves_the_vm_to_the_second(tf, laptop, bucket, capfd):
    tf.cloud.stock_out("us-central1-a")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    code, provisioned = run_watch(laptop, finish_run)
    assert code == 0
    lines = said(capfd.readouterr().out)
    assert lines[1] == f"watch: terraform apply in us-central1-a: offer 1, {T4} (try 1 of 4)"
    assert lines[2].startswith("watch: us-central1-a has no capacity (Error: Error waiting for instance to "
                               "create: ZONE_RESOURCE_POOL_EXHAUSTED")  # fmt: skip
    assert lines[2].endswith("moving to us-central1-b (a new data disk there; the bucket keeps checkpoints)")
    assert lines[3] == f"watch: terraform apply in us-central1-b: offer 1, {T4} (try 2 of 4)"
    assert "watch: tweet-trainer is RUNNING in us-central1-b at 127.0.0.2" in lines
    assert lines[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"
    (vm,) = tf.cloud.resources(VM)
    assert vm["zone"] == "us-central1-b"
    assert [d["zone"] for d in tf.cloud.resources("google_compute_disk")] == ["us-central1-b"]
    # A new VM is provisioned before the run starts, at the address the inventory has by then.
    assert provisioned == ["127.0.0.2"]
    assert host_in(Path(laptop["INVENTORY"])) == "127.0.0.2"
    # The placement is remembered: a later plain apply keeps the VM where it is.
    assert json.loads((tf.workdir / PLACEMENT_FILE).read_text()) == {"placement": {
        "offer": 1, "zone": "us-central1-b", "machine_type": "n1-standard-4", "gpu_type": "nvidia-tesla-t4",
        "gpu_count": 1, "spot": False,
    }}  # fmt: skip
    plan = tf.run(
        "plan", "-input=false", "-no-color", "-detailed-exitcode", *tf.var_args(BASE_VARS), check=False
    )
    assert plan.returncode == 0, plan.stdout[-2000:]
    # ... and the next apply tries that zone first.
    offers = OpsTerraform(tf.workdir, Path(laptop["TFVARS"]), tf.binary).offers()
    assert [c.zone for c in offers.ordered()] == [
        "us-central1-b",
        "us-central1-a",
        "us-central1-c",
        "us-central1-f",
    ]


def test_a_preempted_vm_is_started_again_and_the_run_restarted_at_its_new_address(tf, laptop, bucket, capfd):
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")  # preempted
    tf.cloud.instance_address("tweet-trainer", "127.0.0.9")  # a restarted VM gets another address
    code, provisioned = run_watch(laptop, finish_run)
    assert code == 0
    lines = said(capfd.readouterr().out)
    assert "watch: tweet-trainer is RUNNING in us-central1-a at 127.0.0.9" in lines
    assert [vm["current_status"] for vm in tf.cloud.resources(VM)] == ["RUNNING"]
    assert tf.output()["external_ip"]["value"] == "127.0.0.9"
    assert (
        host_in(Path(laptop["INVENTORY"])) == "127.0.0.9"
    )  # SSH goes to the new address, never the stale one
    assert provisioned == []  # the same VM and disks: nothing to provision
    # Remembered where it is (the first offer's first zone, as configured): nothing said about a move.
    assert json.loads((tf.workdir / PLACEMENT_FILE).read_text())["placement"]["zone"] == "us-central1-a"
    assert not any("keeps it there" in line for line in lines)
    assert lines[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"


def test_a_finished_run_is_left_alone(tf, laptop, bucket, capfd):
    bucket.blob(f"runs/{RUN}/manifest.json").upload_from_string("{}")
    started: list[str] = []
    code, _ = run_watch(laptop, lambda: started.append("start"))
    assert code == 0 and started == []  # never started
    assert not any(line.startswith(f"watch: run {RUN}: ") for line in said(capfd.readouterr().out))


def test_attempts_are_bounded_and_end_in_one_error(tf, laptop, bucket, capfd):
    def start() -> None:
        raise UserError(f"run {RUN} is failed: make logs RUN={RUN} shows why")

    with pytest.raises(UserError) as raised:
        run_watch(laptop, start, attempts=2)
    assert str(raised.value) == (
        f"run {RUN} is not finished after 2 attempts (no gs://{BUCKET}/runs/{RUN}/manifest.json): "
        f"see its log (make logs RUN={RUN}), then make watch RUN={RUN} again"
    )
    lines = said(capfd.readouterr().out)
    assert [line for line in lines if line.startswith("watch: attempt ")] == [
        f"watch: attempt 1 of 2 for run {RUN}",
        f"watch: attempt 2 of 2 for run {RUN}",
    ]
    # The run's own end (ops.runs.train's error) is said on each attempt, and the watch goes on.
    assert lines.count(f"watch: the run ended here: run {RUN} is failed: make logs RUN={RUN} shows why") == 2
    assert lines.count(f"watch: run {RUN} is not finished; next check in 0 s") == 1


def test_bad_attempts_or_sleep_are_refused_before_terraform_runs(tmp_path):
    nowhere = OpsTerraform(tmp_path, tmp_path / "terraform.tfvars", str(tmp_path / "no-terraform"))
    for attempts, sleep in ((0, 0.0), (3, -1.0)):
        with pytest.raises(UserError, match="WATCH_ATTEMPTS must be at least 1 and WATCH_SLEEP at least 0"):
            watch(nowhere, RUN, lambda: None, lambda: None, None, attempts=attempts, sleep=sleep)


def test_every_zone_out_of_stock_ends_the_converge(tf, laptop, capfd):
    for zone in ("us-central1-c", "us-central1-f"):
        tf.cloud.stock_out(zone)
    variables = tfvars(Path(laptop["HOME"]), zone="us-central1-c", fallback_zones=["us-central1-f"])
    with pytest.raises(UserError) as raised:
        OpsTerraform(tf.workdir, variables, tf.binary).converge(auto_approve=True)
    assert str(raised.value) == (
        "no offer could be placed (tried us-central1-c (stock-out), us-central1-f (stock-out)): try again "
        f"later, or list more offers (other zones, regions or GPU kinds) in {variables}"
    )
    out = capfd.readouterr().out
    assert "watch: us-central1-f has no capacity (" in out and "; no offer left" in out
    assert tf.cloud.resources(VM) == []


def test_a_quota_error_skips_the_regions_other_zones(tf, laptop, capfd):
    tf.cloud.quota_exceeded("us-central1")
    with pytest.raises(UserError) as raised:
        OpsTerraform(tf.workdir, Path(laptop["TFVARS"]), tf.binary).converge(auto_approve=True)
    message = str(raised.value)
    assert (
        message.startswith("no offer could be placed (tried us-central1-a (quota)): ") and "\n" not in message
    )
    out = capfd.readouterr().out
    assert "watch: offer 1 has no GPU quota in us-central1 (" in out
    assert "Quota 'NVIDIA_T4_GPUS' exceeded." in out
    assert "terraform apply in us-central1-b" not in out  # the region's zones share the quota


# ---- the verbs: python -m ops, as make runs them ---------------------------------------------------


def ops_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch"], "error: which run? make watch RUN=<run name> (make runs lists them)"),
        (["watch", ""], "error: which run? make watch RUN=<run name>"),
        (["watch", "a b"], "error: RUN='a b': a run name has letters, digits, '.', '_' and '-' only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(laptop_env, tmp_path, args, message):
    env = {k: v for k, v in laptop_env.items() if k not in SETTINGS}
    done = ops_cli({**env, "INFRA_DIR": str(tmp_path), "TERRAFORM": str(tmp_path / "no-terraform")}, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize("verb", ["apply", "up", "price", "plan", "down"])
def test_missing_tfvars_says_how_to_make_them(laptop_env, tmp_path, verb):
    env = {k: v for k, v in laptop_env.items() if k not in SETTINGS}
    done = ops_cli({**env, "INFRA_DIR": str(tmp_path)}, verb)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {tmp_path}/terraform.tfvars not found: cp {tmp_path}/terraform.tfvars.example "
        f"{tmp_path}/terraform.tfvars and set project_id and ssh_source_ranges\n"
    )


def test_make_watchs_verb_brings_a_preempted_vm_back_and_restarts_the_run(
    tf, laptop, bucket, monkeypatch, capfd
):
    """`make watch RUN=r1`'s `python -m ops watch r1`, in-process: the pre-flight checks, init, then the
    watch with ops' inventory writer; the run (re)started by ops.runs.train, here a stand-in that is
    handed ops' real SSH session (to the new address) and finishes the run."""
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.set_attributes(VM, "tweet-trainer", current_status="TERMINATED")
    tf.cloud.instance_address("tweet-trainer", "127.0.0.9")
    sessions = []

    def train(nodes, root, run, args, inputs, follow_it=True) -> int:
        (vm,) = nodes  # one VM: a list of one node
        sessions.append((vm.conn.host, run, args, follow_it))
        finish_run()
        return 0

    monkeypatch.setattr(ops.runs, "train", train)
    monkeypatch.setattr(Settings, "provision", lambda self, extra=(): pytest.fail("nothing to provision"))
    assert main(["watch", RUN, "--epochs", "1"]) == 0
    out = capfd.readouterr().out
    assert "watch: tweet-trainer is RUNNING in us-central1-a at 127.0.0.9" in said(out)
    assert said(out)[-1] == f"watch: run {RUN} is finished: gs://{BUCKET}/runs/{RUN}/manifest.json"
    assert sessions == [("127.0.0.9", RUN, ["--epochs", "1"], True)]
    (host,) = yaml.safe_load(Path(laptop["INVENTORY"]).read_text())["trainer"]["hosts"].values()
    assert host["ansible_host"] == "127.0.0.9" and host["ansible_ssh_private_key_file"] == laptop["SSH_KEY"]


# ---- a VM made anew is provisioned before the verb says done ---------------------------------------


@pytest.fixture
def recorder(laptop, monkeypatch) -> list[str]:
    """Settings.provision (the playbook) replaced by a recorder: each call adds a line with the address
    the inventory holds then (provisioning must reach the new VM, so the inventory is written first)."""
    calls: list[str] = []

    def provision(self, extra=()) -> None:
        calls.append(" ".join(["provisioned", inventory.read(self.inventory, self.ssh_key).host, *extra]))

    monkeypatch.setattr(Settings, "provision", provision)
    return calls


def apply(laptop: dict, capfd, verb: str = "apply", *args: str, **variables) -> tuple[int, str, str]:
    """`python -m ops apply|up` (make infra-apply|infra-up) in-process, with the tfvars given."""
    tfvars(Path(laptop["HOME"]), **variables)
    code = main([verb, *args])
    out, err = capfd.readouterr()
    return code, out, err


def test_converge_provisions_a_vm_the_apply_made_anew_and_only_that_one(tf, laptop, recorder, capfd):
    """A first create and a replacement (spot is ForceNew in the google provider: Terraform destroys
    the VM and creates another, with a bare boot disk) are provisioned; an apply that keeps the VM is
    not. make infra-apply runs this converge."""
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    code, out, err = apply(laptop, capfd, spot=False)
    assert code == 0, err
    assert "watch: provisioning the new VM" in said(out)
    assert f"inventory: wrote {laptop['INVENTORY']} (host tweet-trainer at 127.0.0.2)" in out
    assert recorder == ["provisioned 127.0.0.2"]
    (first,) = tf.cloud.resources(VM)
    code, out, err = apply(laptop, capfd, spot=False)  # nothing to change: the same VM, already provisioned
    assert code == 0, err
    assert said(out)[-1] == (
        "watch: the VM was there before: not provisioned again (make provision re-runs the playbook)"
    )
    assert recorder == ["provisioned 127.0.0.2"]
    tf.cloud.instance_address("tweet-trainer", "127.0.0.5")  # the new VM gets another ephemeral address
    code, out, err = apply(laptop, capfd, spot=True)
    assert code == 0, err
    assert "google_compute_instance.trainer[0] must be replaced" in out
    assert recorder == ["provisioned 127.0.0.2", "provisioned 127.0.0.5"]  # the new VM, at its new address
    (second,) = tf.cloud.resources(VM)
    assert second["instance_id"] != first["instance_id"]
    assert second["scheduling"][0]["provisioning_model"] == "SPOT"
    # infra-up provisions whatever the apply did: here a VM it kept.
    code, out, err = apply(laptop, capfd, "up", spot=True)
    assert code == 0, err
    assert "watch: provisioning the VM" in said(out)
    assert recorder == ["provisioned 127.0.0.2", "provisioned 127.0.0.5", "provisioned 127.0.0.5"]


def test_infra_up_passes_args_to_the_playbook(tf, laptop, recorder, capfd):
    """make infra-up ARGS='-e @vars.json' (and infra-apply's): ARGS are the playbook's flags."""
    code, _, err = apply(laptop, capfd, "up", "-e", "@vars.json")
    assert code == 0, err
    assert len(recorder) == 1 and recorder[0].endswith(" -e @vars.json"), recorder


def test_a_failed_provisioning_says_to_run_make_provision(tf, laptop, monkeypatch, capfd):
    """The next apply keeps the VM and would not provision it: the error says what to run."""

    def provision(self, extra=()) -> None:
        raise UserError("the playbook failed (ansible-playbook exit 2; see above)")

    monkeypatch.setattr(Settings, "provision", provision)
    code, _, err = apply(laptop, capfd)
    assert code == 2
    assert err == (
        "error: provisioning the new VM failed (the playbook failed (ansible-playbook exit 2; see above)): "
        "fix it, then make provision\n"
    )


def test_make_infra_apply_runs_the_playbook_on_a_replaced_vm_and_infra_up_on_any_vm(tf, laptop, tmp_path):
    """The make targets as a user runs them, the real ansible-playbook included: Ansible is made to fail
    at once on the inventory it is given (only the host_list inventory plugin enabled, an unparsed source
    an error), so its output shows whether the playbook ran and on which inventory, with no VM needed.
    infra-apply writes the inventory, then runs the playbook only when the apply replaced the VM; infra-up
    runs it whatever the apply did."""
    tf.cloud.instance_address("tweet-trainer", "127.0.0.2")
    tf.apply()
    tf.cloud.instance_address("tweet-trainer", "127.0.0.5")  # a new VM gets another ephemeral address
    inventory_file = Path(laptop["INVENTORY"])
    env = {**laptop, "ANSIBLE_INVENTORY_ENABLED": "host_list", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}
    unparsed = f"Unable to parse {inventory_file} as an inventory source"

    def make(target: str, **variables) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", target, f"TFVARS={tfvars(tmp_path, **variables)}"],
            capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
        )  # fmt: skip

    done = make("infra-apply", spot=True)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert host_in(inventory_file) == "127.0.0.5"  # written before the playbook ran, with the new address
    assert "watch: provisioning the new VM" in said(done.stdout)
    assert unparsed in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: provisioning the new VM failed (the playbook failed (ansible-playbook exit 1; see above)): "
        "fix it, then make provision"
    ]
    done = make("infra-apply", spot=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "watch: the VM was there before: not provisioned again" in done.stdout
    assert unparsed not in done.stdout + done.stderr  # the playbook did not run
    done = make("infra-up", spot=True)
    assert done.returncode == 2
    assert "watch: provisioning the VM" in said(done.stdout) and unparsed in done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: provisioning the VM failed (the playbook failed (ansible-playbook exit 1; see above)): "
        "fix it, then make provision"
    ]
    assert (
        TOOLS_BIN / "ansible-playbook"
    ).exists()  # make puts .tools/bin first: the playbook is Ansible's own


NOT_ENOUGH = "does not have enough resources available to fulfill the request."
MESSAGES = {
    "exhausted": f"Error: Error waiting for instance to create: ZONE_RESOURCE_POOL_EXHAUSTED: The zone "
    f"'projects/p/zones/us-central1-a' {NOT_ENOUGH}",
    "with-details": "Error: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone "
    f"'projects/p/zones/us-central1-b' {NOT_ENOUGH} '(resource type:compute)'.",
    "googleapi-503": f"│ Error: Error creating instance: googleapi: Error 503: The zone "
    f"'projects/p/zones/us-central1-c' {NOT_ENOUGH}  Try a different zone, or try again later.",
    "quota": "Error: Error waiting for instance to create: QUOTA_EXCEEDED: Quota 'NVIDIA_T4_GPUS' exceeded.",
    "all-regions": "│ Error: Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.",
    "cpu-quota": "Error: Error waiting for instance to create: QUOTA_EXCEEDED: Quota 'CPUS' exceeded.",
    "no-l4-here": "Error: Error creating instance: googleapi: Error 400: Invalid value for field "
    "'resource.machineType': 'zones/us-central1-f/machineTypes/g2-standard-4'. Machine type with name "
    "'g2-standard-4' does not exist in zone 'us-central1-f'., invalid",
    "no-gpu-type": "Error: googleapi: Error 404: The resource 'projects/p/zones/us-west2-c/acceleratorTypes/"
    "nvidia-tesla-t4' was not found, notFound",
    "permission": "Error: googleapi: Error 403: Required 'compute.instances.create' permission",
}
KINDS = {"exhausted": "stock-out", "with-details": "stock-out", "googleapi-503": "stock-out",
         "quota": "quota", "all-regions": "quota", "no-l4-here": "unsupported",
         "no-gpu-type": "unsupported"}  # fmt: skip


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_what_moves_to_the_next_placement(kind):
    """A stock-out, a GPU quota and a zone without the machine or GPU move on; a CPU quota (every GPU offer
    needs CPUs alike) or a permission error does not."""
    found = failure(f"Plan: 1 to add\n{MESSAGES[kind]}\n")
    assert (found[0] if found else None) == KINDS.get(kind)
    if found is not None:
        assert found[1].startswith("Error") and "│" not in found[1]


def test_a_stock_out_with_details_moves_the_vm_too(tf, laptop, capfd):
    details = "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: The zone 'projects/{project}/zones/{zone}' "
    tf.cloud.add_rule(VM, {"zone": "us-central1-a"}, create_error=f"{details}{NOT_ENOUGH}")
    state = OpsTerraform(tf.workdir, Path(laptop["TFVARS"]), tf.binary).converge(auto_approve=True)
    assert state.created and state.outputs["zone"] == "us-central1-b"
    assert state.where().startswith("tweet-trainer is RUNNING in us-central1-b at ")
    out = capfd.readouterr().out
    assert "watch: us-central1-a has no capacity (Error: ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS" in out
