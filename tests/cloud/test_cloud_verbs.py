"""The cloud flow end to end on the session's stand-in deployment (tests/cloud/conftest.py: `make infra-up`
with real Terraform and the stand-in google provider, the inventory, the real playbook over SSH against
the booted stand-in VM), then `make train MODE=cloud` over real SSH, the run a systemd unit on the VM,
the trainer a container of the real Docker engine, artifacts into the bucket through the least-privilege
gate, `make fetch` home, a code change shipped and run; and every bad input of the cloud verbs refused in
one line with nothing started on the VM.

What stands in for GCP (tests/standins/README.md): the google provider, the VM (Debian booting systemd in a
container, sshd on an address of its own in 127.0.0.0/8), the GPU (none: compose's CPU override), Cloud
Storage (gcp-storage-emulator), IAM (the gate, which allows the VM's account exactly what infra/iam.tf
grants it), the user's login (an application-default credentials file of the kind `gcloud auth
application-default login` writes, loaded for real by google.auth).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.cloud.conftest import emulator_client
from tests.standins.deployment import Deployment as Cloud
from tests.standins.deployment import commit
from tests.standins.vm import LOGIN_USER, docker
from trainer.config import all_keys

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]


def run_args() -> str:
    args = "--epochs 1 --batch-size 16 --set model.max_length=32"
    if any(key == "runtime.require_gpu" for key, _, _ in all_keys()):
        args += " --set runtime.require_gpu=false"  # the stand-in has no GPU (the one thing it lacks)
    return args


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ bad input: one line, nothing started


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["RUN=my run"], "error: RUN='my run': a run name has letters, digits"),
        (["RUN=x;touch /tmp/pwned"], "error: RUN='x;touch /tmp/pwned': a run name has letters"),
        (["RUN=$$(reboot)"], "error: RUN='$(reboot)': a run name"),  # $$: make's own escape
        (["RUN=.."], "error: RUN='..': a run name"),
        (["RUN=ok", "DATA=/no/such/tweets.csv"], "error: DATA=/no/such/tweets.csv does not exist"),
        (["RUN=ok", "MODEL=/no/such/model"], "error: MODEL=/no/such/model is not a folder"),
        (["RUN=ok", "DATA=gs://b/$$(id)"], "error: DATA=gs://b/$(id): name an object or folder in a bucket"),
    ],
)
def test_bad_input_is_one_line_and_nothing_starts_on_the_vm(cloud, tiny_csv, extra, message):
    before = (cloud.vm.sessions(), cloud.run_dirs())
    data = [] if any(e.startswith("DATA=") for e in extra) else [f"DATA={tiny_csv}"]
    done = cloud.make("train", "MODE=cloud", *data, *extra, f"ARGS={run_args()}")
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith(message), line
    assert "Traceback" not in done.stderr
    assert (cloud.vm.sessions(), cloud.run_dirs()) == before and not cloud.containers()
    assert not Path("/tmp/pwned").exists()


def other_inventory(cloud: Cloud, tmp_path: Path, **changes: str) -> Path:
    """A copy of the inventory with some node-0 values changed (a different deployment)."""
    text = cloud.inventory.read_text()
    for key, value in changes.items():
        lines = [f"      {key}: {json.dumps(value)}" if line.startswith(f"      {key}: ") else line
                 for line in text.splitlines()]  # fmt: skip
        text = "\n".join(lines) + "\n"
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return path


def test_missing_bucket_missing_vm_and_unreachable_port_are_one_line(cloud, tiny_csv, tmp_path):
    before = (cloud.vm.sessions(), cloud.run_dirs())
    train = ["train", "MODE=cloud", "RUN=ok", f"DATA={tiny_csv}"]
    no_bucket = other_inventory(cloud, tmp_path, trainer_bucket_url="gs://no-such-bucket-here")
    cases = [
        ([*train, f"INVENTORY={no_bucket}"], {},
         "error: bucket gs://no-such-bucket-here does not exist: create it (make infra-up does)"),
        ([*train, f"INVENTORY={tmp_path / 'none.yml'}"], {},
         f"error: no inventory at {tmp_path / 'none.yml'}: run `make infra-up`"),
        (train, {"SSH_PORT": str(cloud.vm.port + 1 if cloud.vm.port < 65535 else 1)},
         f"error: cannot reach the VM over SSH at {LOGIN_USER}@{cloud.vm.address} port"),
        (train, {"SSH_PORT": "22;id"}, "error: SSH port '22;id' is not a number"),
        (["fetch", "RUN=ok", f"INVENTORY={no_bucket}"], {},
         "error: bucket gs://no-such-bucket-here does not exist"),
        (["fetch", "RUN=never-ran"], {}, "error: nothing under gs://"),
    ]  # fmt: skip
    for args, env, message in cases:
        done = cloud.make(*args, env=env)
        assert done.returncode != 0, args
        (line,) = error_lines(done)
        assert line.startswith(message), (args, line)
        assert "Traceback" not in done.stderr
    assert (cloud.vm.sessions(), cloud.run_dirs()) == before and not cloud.containers()
    assert not (cloud.repo / "runs" / "never-ran").exists() and not (cloud.repo / "runs" / "ok").exists()


def test_credentials_are_really_loaded(cloud, tmp_path):
    empty = tmp_path / "key.json"
    empty.write_text("{}")
    done = cloud.make("train", "MODE=cloud", "RUN=ok", env={"GOOGLE_APPLICATION_CREDENTIALS": str(empty)})
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith(
        f"error: GOOGLE_APPLICATION_CREDENTIALS={empty}: The file {empty} does not have a valid type"
    )
    assert "gcloud auth application-default login" in line
    done = cloud.make("infra-plan")
    assert "credentials: user login, project stand-in-project" in done.stdout, done.stdout + done.stderr
    # the plan ends with what it would cost (ops/prices.py over `terraform show -json`)
    assert "/h while running" in done.stdout, done.stdout
    assert "n1-standard-4 + 1 x nvidia-tesla-t4" in done.stdout, done.stdout


def test_a_stopped_vm_is_one_line(cloud, tiny_csv):
    cloud.vm.soft_off()
    try:
        done = cloud.make("train", "MODE=cloud", "RUN=ok", f"DATA={tiny_csv}")
    finally:
        cloud.vm.boot()
    assert done.returncode != 0
    (line,) = error_lines(done)
    assert line.startswith(f"error: cannot reach the VM over SSH at {LOGIN_USER}@{cloud.vm.address}"), line
    assert "is it running?" in line and not cloud.containers() and "ok" not in cloud.run_dirs()


# ------------------------------------------------------------------ the flow


def bucket_files(cloud: Cloud, prefix: str) -> dict[str, bytes]:
    client = emulator_client(cloud.emulator)
    return {
        b.name[len(prefix) :]: b.download_as_bytes() for b in client.list_blobs(cloud.bucket, prefix=prefix)
    }


def image_id(cloud: Cloud) -> str:
    env_file = (cloud.vm.project_dir / ".env").read_text()
    tag = next(line.split("=", 1)[1] for line in env_file.splitlines() if line.startswith("TRAINER_IMAGE="))
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def test_train_on_the_vm_then_fetch_brings_the_run_home_byte_identical(cloud, tiny_csv, tiny_model_dir):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=cloud.repo, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    done = cloud.make("train", "MODE=cloud", "RUN=e2e-1", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={run_args()}")  # fmt: skip
    cloud.timings["train_cloud_s"] = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "train-cloud: done; bring it home with: make fetch RUN=e2e-1" in done.stdout
    assert f"train-cloud: shipping the project ({head})" in done.stdout  # a clean tree: no -dirty

    on_vm = cloud.vm.data_mount / "runs" / "e2e-1"
    manifest = json.loads((on_vm / "manifest.json").read_text())
    assert manifest["git_commit"] == head
    assert manifest["mode"] == "cloud" and manifest["environment"]["in_container"] is True
    assert manifest["bucket"] == f"gs://{cloud.bucket}"
    # the VM's .env prices an hour of the deployment (the inventory, ops/prices.py): the run's hours x it
    hours = manifest["timing"]["wall_seconds"] / 3600
    assert manifest["estimated_cost_usd"] == pytest.approx(hours * 0.5655, abs=1e-4)
    assert manifest["estimated_cost_usd"] > 0
    in_bucket = bucket_files(cloud, "runs/e2e-1/")
    for name in ("metrics.json", "manifest.json", "labels.json", "model/model.safetensors", "training.log"):
        assert name in in_bucket, name
    checkpoints = bucket_files(cloud, "checkpoints/e2e-1/")
    assert any(name.endswith("/model.safetensors") for name in checkpoints), sorted(checkpoints)
    assert in_bucket["metrics.json"] == (on_vm / "metrics.json").read_bytes()
    assert in_bucket["model/model.safetensors"] == (on_vm / "model" / "model.safetensors").read_bytes()
    # Every call the VM's account made was allowed; the one refused kind is google-cloud-storage's own
    # bucket-metadata lookup, which it makes and tolerates (objectAdmin has no storage.buckets.get).
    assert {entry[2] for entry in cloud.gate.denials()} <= {"storage.buckets.get"}, cloud.gate.denials()
    assert any(
        e[1].startswith(f"/upload/storage/v1/b/{cloud.bucket}/o") and e[2] == "allowed"
        for e in cloud.gate.log
    )

    started = time.monotonic()
    done = cloud.make("fetch", "RUN=e2e-1")
    cloud.timings["fetch_s"] = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    home = cloud.repo / "runs" / "e2e-1"
    fetched = {p.relative_to(home).as_posix(): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    assert fetched == in_bucket
    assert f"fetch: runs/e2e-1 ({len(in_bucket)} files from gs://{cloud.bucket}/runs/e2e-1/)" in done.stdout
    again = cloud.make("fetch", "RUN=e2e-1")
    assert error_lines(again) == [
        "error: runs/e2e-1 already exists: move it away first (nothing was fetched)"
    ]


def test_a_code_change_reaches_the_vm_and_its_commit_is_in_the_manifest(cloud, tiny_csv, tiny_model_dir):
    before = image_id(cloud)
    (cloud.repo / "trainer" / "standin_probe.py").write_text(
        '"""A harmless new module: proof the new code ran."""\n'
    )
    head = commit(cloud.repo, "a harmless code change")
    started = time.monotonic()
    done = cloud.make("train", "MODE=cloud", "RUN=e2e-2", f"DATA={tiny_csv}", f"MODEL={tiny_model_dir}",
                      f"ARGS={run_args()} --seed 7")  # fmt: skip
    cloud.timings["train_cloud_after_change_s"] = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert cloud.manifest("e2e-2")["git_commit"] == head
    assert (cloud.vm.project_dir / "trainer" / "standin_probe.py").is_file()
    after = image_id(cloud)
    assert after != before, "the image was not rebuilt after a code change"
    probe = docker("run", "--rm", "--network", "host", "--entrypoint", "python", after, "-c",
                   "import trainer.standin_probe as p; print(p.__doc__)", check=False)  # fmt: skip
    assert "proof the new code ran" in probe.stdout, probe.stderr[-2000:]

    done = cloud.make("fetch", "RUN=e2e-2", "SOURCE=vm")  # from the VM's data disk instead of the bucket
    assert done.returncode == 0, done.stdout + done.stderr
    on_vm = cloud.vm.data_mount / "runs" / "e2e-2"
    home = cloud.repo / "runs" / "e2e-2"
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == sorted(
        p.relative_to(on_vm) for p in on_vm.rglob("*")
    )
    assert (home / "model" / "model.safetensors").read_bytes() == (
        on_vm / "model" / "model.safetensors"
    ).read_bytes()
