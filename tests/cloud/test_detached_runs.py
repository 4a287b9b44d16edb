"""Cloud runs that survive: detached from the SSH session, stopped as a spot VM's soft-off stops them,
resumed from the bucket on a new disk, listed and stopped by hand, and the idle stop.

The stand-in VM of tests/standins/vm.py (Debian's sshd in a container, the real Docker engine, the GCS
emulator behind the least-privilege gate) with the run manager the trainer_host role installs
(/usr/local/sbin/trainer-run). What stands in, beyond that harness: systemd. The stand-in has none, so
`trainer-run start` runs the unit's ExecStart (`trainer-run exec NAME`) in a session of its own there, and
these tests call the unit's other commands as systemd would: ExecStop (`trainer-run halt NAME`, docker
stop: what GCE's ACPI soft-off leads to) and, after a "new disk", ExecStart again (what an enabled unit
does at boot). The unit files themselves are checked by systemd-analyze (test_run_units.py). The idle
stop's command is a file the test sees: a real shutdown is out of reach in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import support
from tests.cloud import test_cloud_verbs
from tests.cloud.conftest import emulator_client
from tests.standins.vm import RUN_MANAGER, docker
from tests.cloud.test_cloud_verbs import Cloud
from tests.support import ROOT, logged_step

stand_in = test_cloud_verbs.cloud  # the `cloud` fixture: this module's own stand-in VM (module-scoped)

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

FIGURES = ROOT / ".ci-cache" / "cloud-preemption-figures.json"
STEPS_PER_EPOCH = 240 // 4  # the tiny CSV's 240 training rows in batches of 4
# Three epochs of 60 steps, evaluated and checkpointed each epoch, one log record a step.
LONG_RUN = (
    "--epochs 3 --batch-size 4 --seed 11 --set model.max_length=32 --set train.logging_steps=1 "
    "--set train.gradient_accumulation_steps=1 --set train.eval_batch_size=64 --set train.learning_rate=5e-3 "
    "--set runtime.require_gpu=false"
)


@pytest.fixture(scope="module", autouse=True)
def no_run_left_behind(stand_in):
    """A failed test leaves no trainer container running on the shared engine (runs are detached)."""
    yield
    label = f"label=com.docker.compose.project={stand_in.compose_project}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def tf_cloud(cloud: Cloud, *args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    env = {**cloud.env, "SSH_KEY": str(cloud.laptop.key), "INVENTORY": str(cloud.inventory),
           "PY": str(ROOT / ".venv" / "bin" / "python"), **env}  # fmt: skip
    return subprocess.run(["scripts/tf_cloud.sh", *args], cwd=cloud.repo, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def train(cloud: Cloud, run: str, data: Path, model: Path, args: str = LONG_RUN, **kwargs):
    return cloud.make("train", "MODE=cloud", f"RUN={run}", f"DATA={data}", f"MODEL={model}", f"ARGS={args}",
                      **kwargs)  # fmt: skip


def run_folder(cloud: Cloud, run: str) -> Path:
    return cloud.vm.data_mount / "runs" / run


def wait_for(predicate, what: str, timeout: float = 300) -> None:
    support.wait_for(predicate, what, timeout, poll=0.05)


def state(cloud: Cloud, run: str) -> str:
    done = tf_cloud(cloud, "state", run)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def markers(cloud: Cloud, run: str) -> dict[int, object]:
    """The bucket's complete checkpoints of a run: step -> the marker object."""
    client = emulator_client(cloud.emulator)
    found = {}
    for blob in client.list_blobs(cloud.bucket, prefix=f"checkpoints/{run}/"):
        folder, _, name = blob.name.split("/", 2)[2].partition("/")
        if name == "checkpoint-complete.json":
            found[int(folder.removeprefix("checkpoint-"))] = blob
    return found


def ssh_clients(session: int) -> list[int]:
    """PIDs of the `ssh` processes in a session this test started (the laptop's connection)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            sid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if comm == "ssh" and sid == session:
            pids.append(int(entry.name))
    return pids


def test_a_dropped_connection_leaves_the_run_going_and_make_logs_shows_it_all(
    stand_in, tiny_csv, tiny_model_dir
):
    cloud = stand_in
    run = "detached-1"
    make = subprocess.Popen(
        ["make", "--no-print-directory", f"VENV={ROOT / '.venv'}", f"SSH_KEY={cloud.laptop.key}",
         f"INVENTORY={cloud.inventory}", "train", "MODE=cloud", f"RUN={run}", f"DATA={tiny_csv}",
         f"MODEL={tiny_model_dir}", f"ARGS={LONG_RUN}"],
        cwd=cloud.repo, env=cloud.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: logged_step(run_folder(cloud, run), 20) or make.poll() is not None, "step 20 of the run"
        )
        assert make.poll() is None, make.communicate()[1][-3000:]
        followers = ssh_clients(make.pid)
        assert followers, "no ssh client following the run"
        for pid in followers:  # the laptop loses its connection: its ssh client dies
            os.kill(pid, signal.SIGKILL)
        out, err = make.communicate(timeout=60)
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
    assert make.returncode != 0
    assert f"run {run} goes on there: make logs RUN={run} reattaches" in err, out[-2000:] + err[-2000:]
    assert state(cloud, run) == "running"

    # A run keeps the VM up: the idle stop does not fire, however old its last note of activity.
    cloud.vm.must("sudo mkdir -p /run/trainer-run && sudo touch -d '-30 minutes' /run/trainer-run/last-busy")
    cloud.vm.must(f"sudo {RUN_MANAGER} idle-check")
    assert not cloud.vm.idle_stop_mark.exists()

    done = cloud.make("logs", f"RUN={run}", timeout=600)  # reattach: follows until the run ends
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    lines = done.stdout.splitlines()
    starts = [
        i for i, line in enumerate(lines) if line.startswith(f"== trainer-run: run {run}, attempt started")
    ]
    assert len(starts) == 1 and starts[0] < 3, lines[:5]  # the whole log: from the very start
    assert any("test: macro-F1" in line for line in lines)
    assert any(line.startswith(f"== trainer-run: run {run} finished") for line in lines)
    assert lines[-1] == f"trainer-run: run {run} is finished"
    manifest = cloud.manifest(run)
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert manifest["timing"]["attempts"] == 1
    assert state(cloud, run) == "finished"

    # Nothing runs any more: after the idle time the host runs its stop command.
    cloud.vm.must("sudo touch -d '-11 minutes' /run/trainer-run/last-busy")  # 10 minutes: the setting
    cloud.vm.must(f"sudo {RUN_MANAGER} idle-check")
    assert cloud.vm.idle_stop_mark.exists(), "the idle stop did not fire"
    cloud.vm.idle_stop_mark.unlink()


def test_preempted_run_resumes_from_the_bucket_on_a_new_disk(stand_in, tiny_csv, tiny_model_dir):
    """GCE's soft-off stops the unit (ExecStop: docker stop, SIGTERM) mid-epoch; the disk is new (the run
    folder wiped); the unit starts again (ExecStart): the run resumes from the bucket and ends where an
    uninterrupted run with the same seed ends."""
    cloud = stand_in
    figures: dict[str, object] = {}
    reference = train(cloud, "preempt-ref", tiny_csv, tiny_model_dir)
    assert reference.returncode == 0, (reference.stdout + reference.stderr)[-3000:]
    uninterrupted = cloud.manifest("preempt-ref")

    run = "preempt-1"
    done = tf_cloud(cloud, "start", run, *LONG_RUN.split(), timeout=900, DATA=str(tiny_csv),
                    MODEL=str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    wait_for(lambda: logged_step(run_folder(cloud, run), STEPS_PER_EPOCH + 15), "step 75 (mid second epoch)")
    before = set(markers(cloud, run))
    sent = time.time()
    cloud.vm.must(f"sudo {RUN_MANAGER} halt {run}")  # the unit's ExecStop: docker stop
    halted = time.time()
    wait_for(lambda: state(cloud, run) != "running", "the run's end")
    assert state(cloud, run) == "interrupted"
    new = {step: blob for step, blob in markers(cloud, run).items() if step not in before}
    # The newest is the checkpoint saved on SIGTERM, at the step it stopped. The tiny model's steps are
    # fast: on a busy machine the stop can land after the second epoch's end, whose own checkpoint then
    # comes first; the run is still interrupted before its end.
    step = max(new, default=0)
    assert STEPS_PER_EPOCH + 15 <= step < 3 * STEPS_PER_EPOCH, (sorted(before), sorted(new))
    assert all(s % STEPS_PER_EPOCH == 0 for s in new if s != step), (sorted(before), sorted(new))
    in_bucket = new[step].time_created.timestamp() if new[step].time_created else halted
    figures["sigterm_to_checkpoint_in_bucket_s"] = round(in_bucket - sent, 2)
    figures["docker_stop_s"] = round(halted - sent, 2)
    assert in_bucket - sent < 25, "the checkpoint must be in the bucket within the stop grace period"

    # A new disk: the run folder is gone; the unit starts again as at boot, with the run's own arguments.
    cloud.vm.must(f"sudo rm -rf {run_folder(cloud, run)}")
    restarted = time.monotonic()
    cloud.vm.must(f"sudo {RUN_MANAGER} start {run}")
    wait_for(lambda: logged_step(run_folder(cloud, run), step + 1), f"the first step after {step}")
    figures["restart_to_first_step_after_resume_s"] = round(time.monotonic() - restarted, 2)
    done = cloud.make("logs", f"RUN={run}", timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log = done.stdout
    assert f"restored checkpoint-{step} from gs://{cloud.bucket}/checkpoints/{run}" in log
    restore_line = next(line for line in log.splitlines() if f"restored checkpoint-{step} from" in line)
    figures["restore_from_bucket_s"] = float(restore_line.rsplit(" in ", 1)[1].split()[0])

    resumed = cloud.manifest(run)
    assert resumed["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert resumed["training"]["global_steps"] == uninterrupted["training"]["global_steps"]
    assert resumed["test_f1_macro"] == pytest.approx(uninterrupted["test_f1_macro"], abs=0.01)
    assert resumed["timing"]["attempts"] == 2  # the attempts record came back from the bucket too
    figures.update(
        checkpoint_step=step,
        global_steps={"resumed": resumed["training"]["global_steps"],
                      "uninterrupted": uninterrupted["training"]["global_steps"]},
        test_macro_f1={"resumed": resumed["test_f1_macro"], "uninterrupted": uninterrupted["test_f1_macro"]},
    )  # fmt: skip
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))


def test_stop_checkpoints_and_runs_lists_the_vm_and_the_bucket(stand_in, tiny_csv, tiny_model_dir):
    cloud = stand_in
    run = "stopped-1"
    files = {"DATA": str(tiny_csv), "MODEL": str(tiny_model_dir)}
    done = tf_cloud(cloud, "start", run, *LONG_RUN.split(), timeout=900, **files)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    again = tf_cloud(cloud, "start", run, *LONG_RUN.split(), **files)
    assert "nothing shipped" in again.stdout  # a running run is never shipped over or started twice
    wait_for(lambda: logged_step(run_folder(cloud, run), 10), "step 10")
    done = cloud.make("stop", f"RUN={run}", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"trainer-run: run {run} is interrupted"
    assert markers(cloud, run), "no checkpoint in the bucket after make stop"

    done = cloud.make("runs")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:-1]}
    assert rows[run][0] == "interrupted" and rows[run][2] == "vm,bucket"
    finished = [name for name, row in rows.items() if row[0] == "finished"]
    assert finished, done.stdout  # the other tests' runs (this module's VM)
    for name in finished:
        assert float(rows[name][1]) == pytest.approx(cloud.manifest(name)["estimated_cost_usd"])

    # A run only in the bucket (a VM gone): its checkpoints say it is unfinished.
    client = emulator_client(cloud.emulator)
    client.bucket(cloud.bucket).blob("checkpoints/elsewhere-1/checkpoint-5/x").upload_from_string(b"")
    done = cloud.make("runs")
    row = next(line for line in done.stdout.splitlines() if line.startswith("elsewhere-1 "))
    assert row.split()[1:] == ["interrupted", "-", "bucket"]


def test_bad_run_names_for_the_run_verbs_are_one_line(stand_in):
    cloud = stand_in
    before = cloud.vm.sessions()
    for verb in ("logs", "stop"):
        done = cloud.make(verb, "RUN=x;id")
        assert done.returncode != 0
        assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
            "error: RUN='x;id': a run name has letters, digits, '.', '_' and '-' only, and starts with a "
            "letter or digit"
        ]
        done = cloud.make(verb)
        assert f"error: which run? make {verb} RUN=<run name>" in done.stderr
    assert cloud.vm.sessions() == before
