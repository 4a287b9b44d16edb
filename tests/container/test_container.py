"""The container: Dockerfile lint, the compose model (GPU reservation, mounts, CPU override), and a
real image build and `docker compose run trainer` on a tiny model, on a real Docker engine.

The model and lint checks need only the tools (`make setup-tools`). The engine checks need a
running engine at DOCKER_HOST and a local base image in TRAINER_TEST_BASE_IMAGE: `.ci/run` starts
both (.ci/services.d/10-docker.sh); elsewhere they skip with the reason, and under `.ci/run` a
skip is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, extra_ca_certs, require, tool

pytestmark = pytest.mark.container

COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
TEST_IMAGE = "tweet-trainer:ci-test"
# Variables of the outer shell that would change the resolved model under test.
COMPOSE_VARS = (
    "GPU_COUNT",
    "TRAINER_MODE",
    "TRAINER_BUCKET",
    "TRAINER_IMAGE",
    "TRAINER_DATA_DIR",
    "TRAINER_RUNS_DIR",
    "TRAINER_MODELS_DIR",
    "TRAINER_ACCELERATE_CONFIG",
    "TRAINER_NUM_PROCESSES",
    "TRAINER_SHM_SIZE",
    "BASE_IMAGE",
    "EXTRA_CA_CERTS",
    "TRAINER_UID",
    "TRAINER_GID",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
    "TRAINER_SERVE_RUN",
    "TRAINER_SERVE_HOST",
    "TRAINER_SERVE_PORT",
)


def compose_cmd() -> list[str]:
    """`docker compose` (the CLI plugin) when present, else the standalone binary from .tools/."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return [tool("docker-compose")]


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    env.update(extra)
    return env


# The repository's own .env (`make setup` writes one for this machine) stays out of the models under test.
NO_ENV_FILE = ("--env-file", os.devnull)


def resolved(*files: Path, **env: str) -> dict:
    """The compose model after merging, interpolation and defaults (`docker compose config`)."""
    args = [a for f in files for a in ("-f", str(f))]
    out = subprocess.run(
        [*compose_cmd(), *NO_ENV_FILE, *args, "config", "--format", "json"],
        cwd=ROOT,
        env=compose_env(**env),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def gpu_devices(model: dict) -> list[dict]:
    return (
        model["services"]["trainer"]
        .get("deploy", {})
        .get("resources", {})
        .get("reservations", {})
        .get("devices", [])
    )


# ---------------------------------------------------------------- compose model and lint (no engine)


def test_compose_file_validates_against_the_compose_spec():
    out = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_resolved_model_reserves_the_gpu():
    devices = gpu_devices(resolved(COMPOSE))
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # GPU_COUNT (written to .env on the VM by Ansible) sets the count.
    assert gpu_devices(resolved(COMPOSE, GPU_COUNT="2"))[0]["count"] == 2


def test_resolved_model_follows_the_mount_and_environment_contract(tmp_path):
    model = resolved(
        COMPOSE,
        TRAINER_DATA_DIR=str(tmp_path / "d"),
        TRAINER_RUNS_DIR=str(tmp_path / "r"),
        TRAINER_MODELS_DIR=str(tmp_path / "m"),
        TRAINER_BUCKET="gs://b",
        TRAINER_IMAGE="x/y:z",
    )
    service = model["services"]["trainer"]
    mounts = {v["target"]: v for v in service["volumes"]}
    assert set(mounts) == {"/config", "/data", "/runs", "/models", "/hf-cache"}
    assert mounts["/config"]["source"] == str(ROOT / "config") and mounts["/config"]["read_only"] is True
    for target, folder in (("/data", "d"), ("/runs", "r"), ("/models", "m")):
        assert mounts[target]["source"] == str(tmp_path / folder) and not mounts[target].get("read_only")
    assert mounts["/hf-cache"]["type"] == "volume" and mounts["/hf-cache"]["source"] in model["volumes"]
    assert service["environment"]["TRAINER_BUCKET"] == "gs://b"
    assert service["image"] == "x/y:z"
    assert int(service["shm_size"]) >= 1 << 30
    # Defaults: the repository's folders, cloud mode, the single-GPU accelerate config.
    service = resolved(COMPOSE)["services"]["trainer"]
    assert {v["target"]: v["source"] for v in service["volumes"]}["/runs"] == str(ROOT / "runs")
    assert service["image"] == "tweet-trainer:latest"
    assert service["environment"]["TRAINER_MODE"] == "cloud"
    assert service["environment"]["TRAINER_ACCELERATE_CONFIG"] == "/config/accelerate/single_gpu.yaml"
    assert service["build"]["context"] == str(ROOT) and service["build"]["dockerfile"] == "Dockerfile"


def test_cpu_override_drops_the_reservation_and_selects_the_cpu_config(tmp_path):
    model = resolved(COMPOSE, CPU_OVERRIDE, GPU_COUNT="2")
    assert gpu_devices(model) == []
    env = model["services"]["trainer"]["environment"]
    assert env["TRAINER_ACCELERATE_CONFIG"] == "/config/accelerate/cpu.yaml"
    assert (ROOT / "config/accelerate/cpu.yaml").is_file()
    # The merged model is still a valid compose file (the override's `!reset` tag is not plain YAML,
    # so the schema check runs on what compose resolved).
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps(model))
    out = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(merged)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def make_compose_env(project: Path, gpu_listed: bool, **variables: str) -> str:
    """`make setup`'s compose-env step for the folder `project`, on a machine whose `nvidia-smi -L` lists a
    GPU or fails (an nvidia-smi of the test's first on PATH); returns what it printed."""
    fake = project.parent / "fake-bin"
    fake.mkdir(exist_ok=True)
    smi = fake / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\n"
        if gpu_listed
        else "#!/bin/sh\necho 'NVIDIA-SMI has failed: no NVIDIA driver' >&2\nexit 9\n"
    )
    smi.chmod(0o755)
    env = {
        k: v for k, v in os.environ.items() if k not in ("GPU", "COMPOSE_ENV_DIR", "MAKEFLAGS", "MAKELEVEL")
    }
    env["PATH"] = f"{fake}:{env['PATH']}"
    extra = [f"{name}={value}" for name, value in variables.items()]
    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "compose-env",
            f"COMPOSE_ENV_DIR={project}",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def compose_project(folder: Path) -> Path:
    """A folder laid out like the repository for compose: the compose files and config/."""
    folder.mkdir()
    for name in (COMPOSE, CPU_OVERRIDE):
        shutil.copy(name, folder / name.name)
    shutil.copytree(ROOT / "config", folder / "config")
    return folder


def bare_model(project: Path) -> dict:
    """The model a bare `docker compose ...` sees in `project`: no -f, the .env there decides."""
    out = subprocess.run(
        [*compose_cmd(), "config", "--format", "json"],
        cwd=project,
        env=compose_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def env_values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_setup_env_makes_the_bare_verb_use_the_cpu_override_where_no_gpu_is_found(tmp_path):
    """`make setup` on a laptop without a GPU: a bare `docker compose run trainer` gets the CPU override,
    your ids and local mode; with a GPU, the reservation; unchanged, the file is left alone."""
    project = compose_project(tmp_path / "project")
    printed = make_compose_env(project, gpu_listed=False)
    env_file = project / ".env"
    assert "COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml (GPU=0)" in printed
    model = bare_model(project)
    service = model["services"]["trainer"]
    assert gpu_devices(model) == []
    assert service["environment"]["TRAINER_ACCELERATE_CONFIG"] == "/config/accelerate/cpu.yaml"
    assert service["environment"]["TRAINER_MODE"] == "local"
    uid, gid = str(os.getuid() or 1000), str(os.getgid() if os.getuid() else 1000)
    assert service["build"]["args"]["TRAINER_UID"] == uid and service["build"]["args"]["TRAINER_GID"] == gid
    # The mounted folders exist and are the container user's (compose would make missing ones as root).
    for name in ("data", "runs", "models"):
        assert (project / name).is_dir()
    assert (project / "runs").stat().st_uid == int(uid)
    # Idempotent: a second run prints nothing and leaves the file as it was.
    before = (env_file.read_bytes(), env_file.stat().st_mtime_ns)
    assert make_compose_env(project, gpu_listed=False) == ""
    assert (env_file.read_bytes(), env_file.stat().st_mtime_ns) == before
    # A GPU appears (drivers installed): the next `make setup` keeps the reservation.
    assert "(GPU=1)" in make_compose_env(project, gpu_listed=True)
    assert env_values(env_file)["COMPOSE_FILE"] == "docker-compose.yml"
    assert gpu_devices(bare_model(project)) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


@pytest.mark.parametrize("gpu_listed", [False, True])
def test_make_train_container_uses_the_compose_files_the_env_names(tmp_path, gpu_listed):
    """One GPU decision: `make train-container` passes the files that `make setup` put in .env."""
    project = compose_project(tmp_path / "project")
    make_compose_env(project, gpu_listed=gpu_listed)
    named = env_values(project / ".env")["COMPOSE_FILE"].split(":")
    fake = tmp_path / "fake-bin"
    env = {k: v for k, v in os.environ.items() if k not in ("GPU", "MAKEFLAGS", "MAKELEVEL")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), "train-container", "MODE=cloud"],
        env={**env, "PATH": f"{fake}:{env['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    command = re.search(r"compose((?: -f \S+)+) run --rm trainer", dry.stdout)
    assert command, dry.stdout
    assert command.group(1).split()[1::2] == named


def test_a_hand_written_env_is_kept_and_never_shipped_to_the_vm(tmp_path):
    project = compose_project(tmp_path / "project")
    mine = "# my settings\nTRAINER_MODE=cloud\nTRAINER_BUCKET=gs://mine\n"
    (project / ".env").write_text(mine)
    printed = make_compose_env(project, gpu_listed=False)
    assert (project / ".env").read_text() == mine
    assert "your .env (kept) sets no COMPOSE_FILE" in printed and "docker-compose.cpu.yml" in printed
    # Git ignores the repository's .env: what ships to the VM is git's files (tracked, and untracked but
    # not ignored), so the laptop's .env stays home and the VM's is the one Ansible writes.
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0


def test_hadolint_passes_and_every_ignored_rule_is_explained():
    out = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=", line):
            reason = lines[i - 1].strip() if i else ""
            assert reason.startswith("#") and len(reason) > 10, (
                f"Dockerfile:{i + 1}: explain the ignore above it"
            )
    for name in (".hadolint.yaml", ".hadolint.yml"):
        config = ROOT / name
        if config.exists():
            ignored = yaml.safe_load(config.read_text()).get("ignored", [])
            text = config.read_text()
            for rule in ignored:
                assert re.search(rf"{rule}.*#\s*\S+", text), f"{name}: {rule} is ignored without a reason"


def test_dockerfile_defaults_to_a_pytorch_cuda12_runtime_and_a_non_root_user():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn\d+-runtime", base.group(1))
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^ENTRYPOINT\s+\[", text, re.M)
    assert "TRAINER_IN_CONTAINER=1" in text and "HF_HOME=/hf-cache" in text
    entrypoint = (ROOT / "docker/entrypoint.sh").read_text()
    # the launcher runs as a job, the user's arguments untouched; SIGTERM (docker stop, a spot
    # preemption) is handed to the trainer processes (tests/cloud/test_detached_runs.py stops one for real)
    assert re.search(r"^accelerate launch .*-m trainer \"\$@\" &$", entrypoint, re.M)
    assert re.search(r"^trap .*kill -TERM .* TERM$", entrypoint, re.M)


@pytest.mark.parametrize("name", ["cpu", "single_gpu", "multi_gpu", "multi_node"])
def test_accelerate_configs_load_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(ROOT / f"config/accelerate/{name}.yaml"))
    if name.startswith("multi"):
        assert config.distributed_type == DistributedType.MULTI_GPU and config.num_processes >= 2
    if name == "multi_node":
        # The address and port come from the VM's .env through the entrypoint, never from this file.
        assert config.num_machines >= 2 and not config.main_process_ip
        assert config.num_processes % config.num_machines == 0  # total processes over all machines
    else:
        assert config.num_machines == 1


# ------------------------------------------------------------------------ a real engine (slow)


class Engine:
    def __init__(self, workdir: Path):
        self.project = f"trainer-ci-{os.getpid()}"
        self.override = workdir / "compose.test.yml"
        # Host networking only: the CI engine has no bridge (see .ci/services.d/10-docker.sh).
        # The serve service listens on the host's loopback itself (no port to publish without a bridge).
        self.override.write_text(
            "services:\n  trainer:\n    build:\n      network: host\n    network_mode: host\n"
            "  serve:\n    network_mode: host\n    ports: !reset []\n"
        )
        self.dirs = {name: workdir / name for name in ("data", "runs", "models")}
        for folder in self.dirs.values():
            folder.mkdir()
        self.uid = os.getuid() or 1000  # as root, the image's default user; else the caller
        self.env = compose_env(
            BASE_IMAGE=os.environ.get("TRAINER_TEST_BASE_IMAGE", ""),
            EXTRA_CA_CERTS=extra_ca_certs(),
            TRAINER_UID=str(self.uid),
            TRAINER_GID=str(os.getgid() or 1000),
            TRAINER_IMAGE=TEST_IMAGE,
            DOCKER_BUILDKIT="0",
            COMPOSE_BAKE="false",
            **{f"TRAINER_{k.upper()}_DIR": str(v) for k, v in self.dirs.items()},
        )

    def compose(self, *args: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
        files = ["-f", str(COMPOSE), "-f", str(CPU_OVERRIDE), "-f", str(self.override)]
        return subprocess.run(
            [*compose_cmd(), "-p", self.project, *NO_ENV_FILE, *files, *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def give_to_container_user(self) -> None:
        for folder in self.dirs.values():
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, self.uid, int(self.env["TRAINER_GID"]))
                path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    docker = shutil.which("docker")
    require(docker, "the docker CLI is not installed (apt-get install docker.io)")
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    require(
        info.returncode == 0,
        f"no Docker engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')} "
        "(.ci/services.d/10-docker.sh starts one; needs root)",
    )
    require(
        os.environ.get("TRAINER_TEST_BASE_IMAGE"),
        "TRAINER_TEST_BASE_IMAGE is not set (.ci/build-base-image.sh)",
    )
    eng = Engine(tmp_path_factory.mktemp("container"))
    yield eng
    eng.compose("down", "--volumes", timeout=120)


@pytest.fixture(scope="module")
def built_image(engine):
    started = time.monotonic()
    out = engine.compose("build", "trainer", timeout=1800)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    build_s = time.monotonic() - started
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", TEST_IMAGE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {"build_seconds": round(build_s, 1), "image_bytes": size}


@pytest.fixture(scope="module")
def container_run(engine, built_image, tiny_model_dir, tiny_csv):
    shutil.copytree(tiny_model_dir, engine.dirs["models"] / "tiny")
    shutil.copy(tiny_csv, engine.dirs["data"] / "tiny.csv")
    engine.give_to_container_user()
    started = time.monotonic()
    out = engine.compose(
        "run",
        "--rm",
        "trainer",
        "--mode",
        "local",
        "--epochs",
        "1",
        "--output-dir",
        "/runs/ci",
        "--batch-size",
        "16",
        "--set",
        "model.name=/models/tiny",
        "--set",
        "data.path=/data/tiny.csv",
        "--set",
        "data.max_rows=null",
        "--set",
        "model.max_length=32",
    )
    timings = {**built_image, "run_seconds": round(time.monotonic() - started, 1)}
    (Path(ROOT) / ".ci-cache").mkdir(exist_ok=True)
    (Path(ROOT) / ".ci-cache/container-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return engine.dirs["runs"] / "ci", out


@pytest.mark.slow
def test_compose_run_trains_in_the_container(container_run):
    run_dir, out = container_run
    assert "run finished: /runs/ci" in out.stdout
    for name in (
        "metrics.json",
        "manifest.json",
        "labels.json",
        "config.resolved.yaml",
        "training.log",
        "model/model.safetensors",
        "model/config.json",
        "model/tokenizer.json",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["f1_macro"] <= 1.0 and metrics["test"]["num_examples"] == 30
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["environment"]["in_container"] is True
    assert manifest["environment"]["device"] == "cpu" and manifest["mode"] == "local"
    # Written by the image's non-root user, not by root.
    assert (run_dir / "metrics.json").stat().st_uid != 0


@pytest.mark.slow
def test_container_runs_as_non_root_and_cannot_write_config(engine, built_image):
    out = engine.compose(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        "trainer",
        "-c",
        "id -u; touch /config/probe && echo WROTE-CONFIG; touch /runs/probe && echo WROTE-RUNS",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] != "0", "the container runs as root"
    assert "WROTE-CONFIG" not in lines and "Read-only file system" in out.stderr
    assert "WROTE-RUNS" in lines
    (engine.dirs["runs"] / "probe").unlink()


def printed_config(stdout: str) -> dict:
    start = re.search(r"^mode: ", stdout, re.M)
    assert start, stdout[-2000:]
    return yaml.safe_load(stdout[start.start() :])


@pytest.mark.slow
def test_mode_picks_the_run_config_and_the_bucket_reaches_the_trainer(engine, built_image):
    engine.give_to_container_user()
    cloud = engine.compose(
        "run", "--rm", "trainer", "--print-config", TRAINER_BUCKET="gs://ci-bucket", TRAINER_MODE="cloud"
    )
    assert cloud.returncode == 0, cloud.stderr[-3000:]
    config = printed_config(cloud.stdout)
    assert config["mode"] == "cloud" and config["runtime"]["bucket"] == "gs://ci-bucket"
    assert config["model"]["name"] == "distilbert-base-uncased"
    local = engine.compose("run", "--rm", "trainer", "--mode", "local", "--print-config")
    assert local.returncode == 0, local.stderr[-3000:]
    config = printed_config(local.stdout)
    assert config["mode"] == "local" and config["runtime"]["output_dir"] == "runs/local"


@pytest.mark.slow
def test_a_code_change_reuses_the_dependency_layers(engine, built_image, tmp_path):
    """Same build arguments, one line of code changed: pip's dependency step comes from the cache."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, ctx / name)
    for name in ("trainer", "config", "docker"):
        shutil.copytree(ROOT / name, ctx / name, ignore=shutil.ignore_patterns("__pycache__"))
    with (ctx / "trainer/__init__.py").open("a") as f:
        f.write("\n# a code change\n")
    args = [
        a for k in ("BASE_IMAGE", "EXTRA_CA_CERTS", "TRAINER_UID", "TRAINER_GID") for a in ("--build-arg", k)
    ]
    probe = "tweet-trainer:ci-probe"
    out = subprocess.run(
        ["docker", "build", "--network", "host", *args, "-t", probe, str(ctx)],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    subprocess.run(["docker", "image", "rm", probe], capture_output=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    steps = out.stdout.split("\nStep ")
    deps = [s for s in steps if "--requirement" in s]
    code = [s for s in steps if "--no-build-isolation" in s]
    assert len(deps) == 1 and "Using cache" in deps[0], "a code change reinstalled the dependencies"
    assert len(code) == 1 and "Using cache" not in code[0], "the changed code was not reinstalled"


@pytest.mark.slow
def test_bare_compose_run_trains_on_a_machine_without_a_gpu(
    engine, built_image, tmp_path, tiny_model_dir, tiny_csv
):
    """The user's verb as typed, `docker compose run --rm trainer --epochs 1 ...` in the project, no -f and
    no --mode: the .env that `make setup` writes where nvidia-smi finds no GPU makes it run on the CPU-only
    engine, in local mode, as the user."""
    project = compose_project(tmp_path / "project")
    make_compose_env(project, gpu_listed=False)
    shutil.copytree(tiny_model_dir, project / "models" / "tiny")
    shutil.copy(tiny_csv, project / "data" / "tiny.csv")
    if (
        os.getuid() == 0
    ):  # as root, the image's default user owns what it reads, as `make setup` hands runs/ to it
        for path in [project / "models", *(project / "models").rglob("*"), *(project / "data").rglob("*")]:
            os.chown(path, engine.uid, int(engine.env["TRAINER_GID"]))
    # Only the test's image tag and its own project name come from outside the .env.
    env = compose_env(TRAINER_IMAGE=TEST_IMAGE, COMPOSE_PROJECT_NAME=f"{engine.project}-bare")
    args = [
        "--epochs", "1", "--output-dir", "/runs/bare", "--batch-size", "16",
        "--set", "model.name=/models/tiny", "--set", "data.path=/data/tiny.csv",
        "--set", "data.max_rows=null", "--set", "model.max_length=32",
    ]  # fmt: skip
    run = partial(subprocess.run, cwd=project, env=env, capture_output=True, text=True)
    try:
        out = run([*compose_cmd(), "run", "--rm", "trainer", *args], timeout=900)
    finally:
        run([*compose_cmd(), "down", "--volumes"], timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "run finished: /runs/bare" in out.stdout
    manifest = json.loads((project / "runs/bare/manifest.json").read_text())
    assert manifest["mode"] == "local" and manifest["environment"]["device"] == "cpu"
    assert manifest["environment"]["in_container"] is True
    assert (project / "runs/bare/metrics.json").stat().st_uid == engine.uid


def test_the_serve_service_answers_the_compose_model(tmp_path):
    """`serve`: the trainer's image running the server, the runs read-only, its port on the host's loopback
    only; the CPU override leaves it valid (it reserves no GPU)."""
    for model in (resolved(COMPOSE), resolved(COMPOSE, CPU_OVERRIDE)):
        serve = model["services"]["serve"]
        assert serve["image"] == "tweet-trainer:latest" and serve["entrypoint"][-1] == "trainer.serve"
        assert serve["command"][:2] == ["--run", "/runs/local"]
        assert [(p["host_ip"], int(p["published"]), p["target"]) for p in serve["ports"]] == [
            ("127.0.0.1", 8000, 8000)
        ]
        assert [(v["target"], v.get("read_only")) for v in serve["volumes"]] == [("/runs", True)]
        assert "deploy" not in serve
    serve = resolved(COMPOSE, TRAINER_SERVE_RUN="exp1", TRAINER_SERVE_PORT="9001")["services"]["serve"]
    assert serve["command"][1] == "/runs/exp1" and serve["ports"][0]["published"] == "9001"


@pytest.mark.slow
def test_compose_serve_answers_good_and_bad_requests(engine, built_image, onnx_run):
    """`docker compose up serve` on a run folder with its ONNX export: the same requests as
    tests/trainer/test_serve.py, against the server in the container (host network, loopback)."""
    from tests.support import free_port
    from tests.trainer.test_serve import BAD, TEXTS, Server

    shutil.copytree(onnx_run, engine.dirs["runs"] / "served")
    engine.give_to_container_user()
    port = free_port()
    env = {"TRAINER_SERVE_RUN": "served", "TRAINER_SERVE_HOST": "127.0.0.1", "TRAINER_SERVE_PORT": str(port)}
    up = engine.compose("up", "-d", "serve", timeout=300, **env)
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
    try:
        server = Server.__new__(Server)  # the client half only: the container is the server
        server.port = port
        deadline = time.monotonic() + 180
        while not server.healthy():
            logs = engine.compose("logs", "serve", timeout=60, **env)
            assert time.monotonic() < deadline, (logs.stdout + logs.stderr)[-3000:]
            time.sleep(1)
        status, meta = server.json("GET", "/metadata")
        assert status == 200 and meta["run"] == "/runs/served" and meta["format"] == "onnx"
        status, data = server.json("POST", "/predict", {"texts": TEXTS})
        assert status == 200 and [r["text"] for r in data["predictions"]] == TEXTS
        assert data["predictions"][1]["label"] is None
        assert all(r["label"] in meta["labels"] for r in data["predictions"] if r["text"])
        # the service runs with the default limits: 256 texts a request, 10,000 characters a text
        bad = [v for k, v in BAD.items() if k not in ("list-too-long", "text-too-long")] + [
            (json.dumps({"texts": ["a"] * 257}).encode(), 413, '"texts" has 257 items, at most 256'),
            (json.dumps({"text": "b" * 10_001}).encode(), 413, "text has 10001 characters, at most 10000"),
        ]
        for body, want_status, words in bad:
            status, raw = server.request("POST", "/predict", body)
            assert status == want_status and words in json.loads(raw)["error"], raw
        assert server.json("POST", "/predict", {"text": "lovely"})[0] == 200
        logs = engine.compose("logs", "serve", timeout=60, **env)
        assert "Traceback" not in logs.stdout + logs.stderr
    finally:
        engine.compose("rm", "--stop", "--force", "serve", timeout=120, **env)
