"""One stand-in deployment: what `make infra-up` leaves behind, made by the user's own verbs.

Real Terraform over infra/ with the stand-in google provider (tf_harness.py), which gives the instance the
booted stand-in VM's address (vm.py); `make infra-apply` writes the inventory; the GCS emulator with the
least-privilege gate (gcs_gate.py) in front of it for the VM's account; then `make provision`: the real
playbook over SSH against the booted VM. `provision_vars()` is everything the stand-in passes to the
playbook, each with the reason it differs from a GCP VM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.standins.gcs_gate import Gate
from tests.standins.vm import Laptop, StandInVM, compose_plugin, docker
from tests.support import ROOT, TOOLS_BIN, extra_ca_certs

INSTANCE = "tweet-trainer"  # infra/'s default instance_name: the VM's name
STEPS_PER_EPOCH = 240 // 4  # the tiny CSV's 240 training rows in batches of 4
# A run long enough to interrupt: three epochs of 60 steps, evaluated and checkpointed each epoch, one
# log record a step.
LONG_RUN = (
    "--epochs 3 --batch-size 4 --seed 11 --set model.max_length=32 --set train.logging_steps=1 "
    "--set train.gradient_accumulation_steps=1 --set train.eval_batch_size=64 --set train.learning_rate=5e-3 "
    "--set runtime.require_gpu=false"
)


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


def adc_file(path: Path) -> Path:
    """What `gcloud auth application-default login` writes (a user's refresh token), with made-up values."""
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "stand-in.apps.googleusercontent.com",
        "client_secret": "stand-in-secret", "refresh_token": "stand-in-refresh-token",
        "quota_project_id": "stand-in-project",
    }))  # fmt: skip
    return path


def compose_overrides(gate: Gate) -> str:
    """The stand-in's compose file, after the CPU override: the build on the host network (the CI engine
    has no bridge) from the local base image (no registry), the gate in place of storage.googleapis.com."""
    service = {
        "build": {"network": "host", "args": {"BASE_IMAGE": os.environ["TRAINER_TEST_BASE_IMAGE"],
                                              "EXTRA_CA_CERTS": extra_ca_certs()}},
        "environment": {"STORAGE_EMULATOR_HOST": gate.url},
    }  # fmt: skip
    return json.dumps({"services": {"trainer": service}}, indent=2) + "\n"  # JSON is YAML


@dataclass
class Deployment:
    repo: Path
    laptop: Laptop
    vm: StandInVM
    gate: Gate
    env: dict[str, str]
    inventory: Path
    emulator: str
    bucket: str
    compose_project: str
    timings: dict[str, float] = field(default_factory=dict)
    # Several nodes (node_count > 1): every VM, node 0 (`vm`) first, and the folder they all mount.
    vms: list[StandInVM] = field(default_factory=list)
    shared: Path | None = None

    def make(
        self, *args: str, env: dict[str, str] | None = None, timeout: int = 900, input_text: str | None = None
    ):
        vars_ = [f"VENV={ROOT / '.venv'}", f"TOOLS={ROOT / '.tools'}", f"SSH_KEY={self.laptop.key}",
                 f"INVENTORY={self.inventory}"]  # fmt: skip
        return subprocess.run(
            ["make", "--no-print-directory", *vars_, *args],
            cwd=self.repo, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
            input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def vars_file(self) -> Path:
        return self.laptop.home / "stand-in-vars.json"

    def provision_vars(self) -> dict:
        """What the playbook is told about the stand-in, each with its reason (nothing else differs)."""
        plugin = compose_plugin()
        assert plugin, "the docker compose plugin is needed on the host (~/.docker/cli-plugins)"
        disk = self.shared or self.vm.root  # several nodes: a folder each VM sees at the same path
        cached = disk / "var" / "cache" / "docker-compose"
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plugin, cached)
        overrides = disk / "etc" / "trainer-standin-compose.yml"
        overrides.parent.mkdir(parents=True, exist_ok=True)
        overrides.write_text(compose_overrides(self.gate))
        several = {
            # The VMs share the CI's one Docker engine: each node's run containers get names of their own.
            "trainer_host_run_container_prefix": "trainer-run-n{{ trainer_host_node_rank }}-",
        }
        return {
            **(several if len(self.vms) > 1 else {}),
            # The driver packages and their DKMS build: the chroot run's (tests/infra/test_ansible.py); a
            # container has no kernel to build or load the module for.
            "nvidia_driver_install": False,
            # NVIDIA's apt repository is out of reach here (its check-mode run is test_ansible.py's).
            "nvidia_container_toolkit_install": False,
            # GitHub is out of reach: the same compose plugin the CI engine's CLI uses, from the VM's disk.
            "docker_compose_url": f"file://{cached}",
            "docker_compose_checksum": "sha256:" + hashlib.sha256(cached.read_bytes()).hexdigest(),
            # No GPU: compose's CPU override, and no GPU check at the end.
            "trainer_host_gpu_count": 0,
            "trainer_host_compose_files": ["docker-compose.yml", "docker-compose.cpu.yml", str(overrides)],
            # The shared CI engine: names of this session's own.
            "trainer_host_extra_env": {"COMPOSE_PROJECT_NAME": self.compose_project},
            "trainer_host_image": "tweet-trainer:standin-vm",
            # The session's other tests leave the VM idle between modules; the idle test back-dates past it.
            "trainer_host_idle_stop_minutes": 60,
            # The laptop's own known_hosts (the CI machine's ~/.ssh is left alone).
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.laptop.known_hosts}",
        }

    def provision(self, timeout: int = 1800) -> subprocess.CompletedProcess:
        """`make provision`, as the user runs it (the inventory `make infra-apply` wrote)."""
        self.vars_file.write_text(json.dumps(self.provision_vars(), indent=2))
        return self.make("provision", f"ARGS=-e @{self.vars_file}", timeout=timeout)

    def ops(self, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
        """The laptop package itself (what the make recipes call), e.g. `start NAME ARGS...`."""
        env = {**self.env, "SSH_KEY": str(self.laptop.key), "INVENTORY": str(self.inventory), **env}
        return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "ops", *args], cwd=self.repo,
                              env=env, capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def state(self, run: str) -> str:
        done = self.ops("state", run)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run_folder(self, run: str) -> Path:
        return self.vm.data_mount / "runs" / run

    def markers(self, run: str) -> dict[int, object]:
        """The bucket's complete checkpoints of a run: step -> the marker object."""
        found = {}
        for blob in self._client().list_blobs(self.bucket, prefix=f"checkpoints/{run}/"):
            folder, _, name = blob.name.split("/", 2)[2].partition("/")
            if name == "checkpoint-complete.json":
                found[int(folder.removeprefix("checkpoint-"))] = blob
        return found

    def in_bucket(self, name: str) -> bool:
        return self._client().bucket(self.bucket).blob(name).exists()

    def _client(self):
        from tests.cloud.conftest import emulator_client

        return emulator_client(self.emulator)

    def run_dirs(self) -> set[str]:
        return {p.name for p in (self.vm.data_mount / "runs").iterdir()}

    def containers(self) -> str:
        label = f"label=com.docker.compose.project={self.compose_project}"
        return docker("ps", "-a", "-q", "--filter", label).stdout.strip()

    def manifest(self, run: str) -> dict:
        return json.loads(
            self._client().bucket(self.bucket).blob(f"runs/{run}/manifest.json").download_as_bytes()
        )


def tools_path() -> str:
    return f"{TOOLS_BIN}:{os.environ.get('PATH', '')}"
