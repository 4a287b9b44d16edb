"""The cloud flow end to end against a stand-in VM: `make infra-apply` (real Terraform over infra/ with
the stand-in google provider, which gives the VM the stand-in's address) and `make inventory`, then
`make train MODE=cloud` over real SSH into the real Docker engine, artifacts into the bucket through
the least-privilege gate, `make fetch` home, a code change shipped and run; and every bad input of
the cloud verbs refused in one line with nothing started on the VM.

What stands in for GCP (see tests/standins/vm.py and tests/standins/gcs_gate.py): the google provider
(tests/standins/tf_harness.py), the VM (a container running Debian's sshd on an address of its own in
127.0.0.0/8), the GPU (none: compose's CPU override), Cloud Storage (gcp-storage-emulator), IAM (the
gate, which allows the VM's account exactly what infra/iam.tf grants it), the user's login (an
application-default credentials file of the kind `gcloud auth application-default login` writes,
loaded for real by google.auth). Everything after the SSH connection runs as it would on the VM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cloud.conftest import emulator_client
from tests.standins.gcs_gate import Gate, Policy
from tests.standins.vm import LOGIN_USER, Laptop, StandInVM, build_standin_image, docker
from tests.container.test_container import extra_ca_certs
from tests.standins.google_provider.cloud import CLOUD_ENV, StandInCloud
from tests.support import ROOT, require
from trainer.config import all_keys

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

INSTANCE = "tweet-trainer"  # infra/'s default instance_name: the VM's name
TIMINGS = ROOT / ".ci-cache" / "cloud-standin-timings.json"


def run_args() -> str:
    args = "--epochs 1 --batch-size 16 --set model.max_length=32"
    if any(key == "runtime.require_gpu" for key, _, _ in all_keys()):
        args += " --set runtime.require_gpu=false"  # the stand-in has no GPU (the one thing it lacks)
    return args


def copy_repo(dest: Path) -> str:
    """The working tree as git sees it (tracked + untracked, not ignored), as a fresh repository."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    for name in subprocess.run(listing, cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0"):
        source = ROOT / os.fsdecode(name)
        if name and source.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name))
    return commit(dest, "the project, as shipped", init=True)


def commit(repo: Path, message: str, init: bool = False) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    steps = [["git", "init", "-q", "-b", "main"]] if init else []
    steps += [["git", "add", "-A"], ["git", "commit", "-q", "-m", message]]
    for step in steps:
        subprocess.run(step, cwd=repo, env=env, check=True, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Cloud:
    repo: Path
    laptop: Laptop
    vm: StandInVM
    gate: Gate
    env: dict[str, str]
    inventory: Path
    emulator: str
    bucket: str
    compose_project: str
    timings: dict[str, float]

    def make(self, *args: str, env: dict[str, str] | None = None, timeout: int = 900):
        vars_ = [f"VENV={ROOT / '.venv'}", f"SSH_KEY={self.laptop.key}", f"INVENTORY={self.inventory}"]
        return subprocess.run(
            ["make", "--no-print-directory", *vars_, *args],
            cwd=self.repo, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def run_dirs(self) -> set[str]:
        return {p.name for p in (self.vm.data_mount / "runs").iterdir()}

    def containers(self) -> str:
        label = f"label=com.docker.compose.project={self.compose_project}"
        return docker("ps", "-a", "-q", "--filter", label).stdout.strip()

    def manifest(self, run: str) -> dict:
        blob = emulator_client(self.emulator).bucket(self.bucket).blob(f"runs/{run}/manifest.json")
        return json.loads(blob.download_as_bytes())


def adc_file(path: Path) -> Path:
    """What `gcloud auth application-default login` writes (a user's refresh token), with made-up values."""
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "stand-in.apps.googleusercontent.com",
        "client_secret": "stand-in-secret", "refresh_token": "stand-in-refresh-token",
        "quota_project_id": "stand-in-project",
    }))  # fmt: skip
    return path


def compose_overrides(gate: Gate) -> str:
    """The stand-in's compose file: CPU override's partner (host network: the CI engine has no bridge;
    the local base image for the one registry image; the gate in place of storage.googleapis.com)."""
    service = {
        "build": {"network": "host", "args": {"BASE_IMAGE": os.environ["TRAINER_TEST_BASE_IMAGE"],
                                              "EXTRA_CA_CERTS": extra_ca_certs()}},
        "network_mode": "host",
        "environment": {"STORAGE_EMULATOR_HOST": gate.url},
    }  # fmt: skip
    return json.dumps({"services": {"trainer": service}}, indent=2) + "\n"  # JSON is YAML


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, gcs_emulator, stand_in_google):
    for tool_name in ("ssh", "ssh-keygen", "docker", "make", "git"):
        require(shutil.which(tool_name), f"`{tool_name}` is not installed (.ci/apt-packages.txt)")
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True
    )
    require(info.returncode == 0, "no Docker engine answers at DOCKER_HOST (.ci/services.d/10-docker.sh)")
    require(
        os.environ.get("TRAINER_TEST_BASE_IMAGE"),
        "TRAINER_TEST_BASE_IMAGE is not set (.ci/build-base-image.sh)",
    )
    timings: dict[str, float] = {}
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("cloud")
    repo = tmp / "repo"
    repo.mkdir()
    copy_repo(repo)
    laptop = Laptop(tmp / "laptop")
    address = f"127.77.{os.getpid() // 250 % 250}.{os.getpid() % 250 + 1}"
    vm = StandInVM(tmp / "vm", build_standin_image(os.environ["TRAINER_TEST_BASE_IMAGE"]), laptop, address)
    timings["standin_image_s"] = time.monotonic() - started

    # Terraform's half of `make infra-up`, for real, with the stand-in google provider.
    env = {**stand_in_google.env(repo / "infra"), CLOUD_ENV: str(tmp / "stand-in-cloud.json")}
    StandInCloud(Path(env[CLOUD_ENV])).instance_address(INSTANCE, address)
    (repo / "infra" / "terraform.tfvars").write_text(
        'project_id = "stand-in-project"\nssh_source_ranges = ["127.0.0.1/32"]\n'
        f'ssh_public_key_path = "{laptop.key}.pub"\n'
    )
    inventory = tmp / "hosts.yml"
    env.update({
        "GOOGLE_APPLICATION_CREDENTIALS": str(adc_file(laptop.home / "adc.json")),
        "NO_GCE_CHECK": "true",  # no probe of a metadata server outside loopback
        "STORAGE_EMULATOR_HOST": gcs_emulator,  # the laptop's own bucket access (the project's owner)
        "SSH_KNOWN_HOSTS": str(laptop.known_hosts),
        "SSH_PORT": str(vm.port),
        "TRAINER_VM_PROJECT_DIR": str(vm.project_dir),
        "TRAINER_VM_DATA_MOUNT": str(vm.data_mount),
    })  # fmt: skip
    cloud = Cloud(repo, laptop, vm, None, env, inventory, gcs_emulator, "", "", timings)  # type: ignore[arg-type]
    step = time.monotonic()
    done = cloud.make("infra-apply", "AUTO_APPROVE=1", timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "Apply complete! Resources:" in done.stdout and f"make_inventory: wrote {inventory}" in done.stdout
    timings["terraform_apply_and_inventory_s"] = time.monotonic() - step
    commit(repo, "Terraform's lock file, as `terraform init` advises")  # the tree is clean again
    shown = subprocess.run(["python3", "scripts/make_inventory.py", "--show", "--out", str(inventory)],
                           cwd=repo, capture_output=True, text=True, check=True).stdout  # fmt: skip
    connection = dict(line.split("=", 1) for line in shown.splitlines())
    assert connection["host"] == address and connection["port"] == str(vm.port)
    cloud.bucket = connection["bucket_url"].removeprefix("gs://")
    output = ["terraform", "-chdir=infra", "output", "-raw", "service_account_email"]
    account = subprocess.run(output, cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    with ExitStack() as stack:
        # What the bucket resource is on GCP: new and empty for this stand-in. The emulator serves the
        # whole session, and another module's stand-in (same Terraform names) may have made it already.
        gcs = emulator_client(gcs_emulator)
        if gcs.lookup_bucket(cloud.bucket) is None:
            gcs.create_bucket(cloud.bucket)
        for blob in gcs.list_blobs(cloud.bucket):
            blob.delete()
        port = int(gcs_emulator.rsplit(":", 1)[1])
        cloud.gate = stack.enter_context(
            Gate(port, Policy.from_iam_tf(repo / "infra" / "iam.tf", account, cloud.bucket))
        )
        stack.callback(vm.remove)
        step = time.monotonic()
        vm.start()
        cloud.compose_project = f"standin{os.getpid()}"
        vm.provision(repo, connection["bucket_url"], {"COMPOSE_PROJECT_NAME": cloud.compose_project},
                     compose_overrides(cloud.gate))  # fmt: skip
        timings["vm_boot_and_provision_s"] = time.monotonic() - step
        stack.callback(vm.ssh, f"cd {vm.project_dir} && sudo docker compose down --volumes --rmi local")
        yield cloud
    timings["total_s"] = time.monotonic() - started
    TIMINGS.parent.mkdir(exist_ok=True)
    TIMINGS.write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2) + "\n")


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
        (["RUN=ok", "DATA=gs://b/$$(id)"], "error: DATA=gs://b/$(id): a gs:// URL of letters"),
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
    # the plan ends with what it would cost (trainer/prices.py over `terraform show -json`)
    assert "/h while running" in done.stdout, done.stdout
    assert "n1-standard-4 + 1 x nvidia-tesla-t4" in done.stdout, done.stdout


def test_a_stopped_vm_is_one_line(cloud, tiny_csv):
    cloud.vm.stop()
    try:
        done = cloud.make("train", "MODE=cloud", "RUN=ok", f"DATA={tiny_csv}")
    finally:
        cloud.vm.resume()
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
    # the VM's .env prices an hour of the deployment (the inventory, trainer/prices.py): the run's hours x it
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
