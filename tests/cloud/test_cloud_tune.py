"""`make tune MODE=cloud`: a study as a detached run on the booted stand-in VM (tests/standins/vm.py: systemd
as PID 1, the run unit the real playbook installed over SSH, the Docker engine the CI's, the GCS emulator
behind the least-privilege gate).

A study of two trials starts from the laptop's verb; mid second trial the VM gets a spot soft-off (`docker
stop -t 30`: systemd stops the unit, the trial checkpoints to the bucket) and comes back with a new data
disk. The same verb again restores the study from the bucket (its database and the first trial's records),
retries the interrupted trial from its checkpoint in the bucket, and the study ends with its two trials, the
first kept as it was. `make runs` and `make logs` work on the study as on a run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest

from tests import support
from tests.standins.deployment import STEPS_PER_EPOCH, Deployment, commit
from tests.standins.vm import SPOT_GRACE_S, docker
from tests.support import logged_step

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.gcs]

STUDY = "tune-vm"
TUNE_FILE = """\
study:
  name: tune-vm
  n_trials: 2
  sampler: random
  seed: 3
  pruner: none
space:
  train.learning_rate: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}
"""
# Each trial as the booted tests' long run: three epochs of 60 steps, a checkpoint each epoch.
TRIAL_ARGS = (
    "--set train.epochs=3 --set train.batch_size=4 --set train.seed=11 --set model.max_length=32 "
    "--set train.logging_steps=1 --set train.gradient_accumulation_steps=1 --set train.eval_batch_size=64 "
    "--set train.early_stopping.enabled=false --set runtime.require_gpu=false"
)


def wait_for(predicate, what: str, timeout: float = 600) -> None:
    support.wait_for(predicate, what, timeout, poll=0.1)


def power_cut(cloud: Deployment) -> list[str]:
    label = f"label=com.docker.compose.project={cloud.compose_project}"
    ids = docker("ps", "-q", "--filter", label).stdout.split()
    if ids:
        docker("kill", *ids, check=False)
        docker("rm", "-f", *ids, check=False)
    return ids


def study_trials(cloud: Deployment) -> list[tuple[int, str, float | None]]:
    """(number, state, value) of the study's trials in the database the bucket holds."""
    blob = cloud._client().bucket(cloud.bucket).blob(f"runs/{STUDY}/study.db")
    path = cloud.repo / ".study-copy.db"
    blob.download_to_filename(str(path))
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
            "ON v.trial_id = t.trial_id ORDER BY t.number"
        ).fetchall()
    path.unlink()
    return rows


def remove_on_vm(cloud: Deployment, folder) -> None:
    """As a new data disk: the folder gone (as root, the owner of what the containers wrote)."""
    image = os.environ["TRAINER_TEST_BASE_IMAGE"]
    docker("run", "--rm", "-v", f"{folder.parent}:/d", image, "rm", "-rf", f"/d/{folder.name}")


def test_a_bad_tune_file_for_the_vm_is_one_line(cloud: Deployment, tmp_path):
    outside = tmp_path / "space.yaml"
    outside.write_text(TUNE_FILE)
    done = cloud.make("tune", "MODE=cloud", f"TUNE={outside}", timeout=300)
    assert done.returncode != 0
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "a cloud study reads its tune file from config/" in line, done.stderr[-2000:]
    done = cloud.make("tune", "MODE=cloud", "STUDY=bad/name", timeout=300)
    assert "STUDY='bad/name': a study name has" in done.stderr, done.stderr[-2000:]


def test_a_study_on_the_vm_survives_a_preemption_and_a_new_disk_and_ends_with_its_trials(
    cloud: Deployment, tiny_csv, tiny_model_dir
):
    (cloud.repo / "config" / "tune-test.yaml").write_text(TUNE_FILE)
    commit(cloud.repo, "a study for the stand-in VM")
    verb = ["tune", "MODE=cloud", f"STUDY={STUDY}", "TUNE=config/tune-test.yaml", f"DATA={tiny_csv}",
            f"MODEL={tiny_model_dir}", f"ARGS={TRIAL_ARGS}"]  # fmt: skip
    vars_ = [f"VENV={support.ROOT / '.venv'}", f"TOOLS={support.ROOT / '.tools'}",
             f"SSH_KEY={cloud.laptop.key}", f"INVENTORY={cloud.inventory}"]  # fmt: skip
    following = subprocess.Popen(
        ["make", "--no-print-directory", *vars_, *verb], cwd=cloud.repo, env=cloud.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    study_dir = cloud.run_folder(STUDY)
    try:
        wait_for(lambda: (study_dir / "trial-000" / "manifest.json").is_file(), "trial 0's end", 900)
        wait_for(lambda: logged_step(study_dir / "trial-001", STEPS_PER_EPOCH + 15), "trial 1 mid epoch 2")
        off_s, exit_code = cloud.vm.soft_off(SPOT_GRACE_S)
    finally:
        said = following.communicate(timeout=300)[0]
    assert not power_cut(cloud), "the study's container outlived the soft-off"
    assert exit_code == 130, f"the VM did not power off cleanly within {SPOT_GRACE_S} s"
    assert f"run {STUDY}; artifacts in /runs/{STUDY}" in said, said[-3000:]
    # In the bucket: the database with trial 1 interrupted (failed by the stop, or still running if the
    # power-off came first), trial 0's records, trial 1's stop checkpoint.
    before = study_trials(cloud)
    assert [(n, st) for n, st, _ in before] in (
        [(0, "COMPLETE"), (1, "FAIL")],
        [(0, "COMPLETE"), (1, "RUNNING")],
    ), before
    assert cloud.in_bucket(f"runs/{STUDY}/trial-000/manifest.json")
    steps = sorted(
        int(b.name.split("/")[3].removeprefix("checkpoint-"))
        for b in cloud._client().list_blobs(cloud.bucket, prefix=f"checkpoints/{STUDY}/trial-001/")
        if b.name.endswith("/checkpoint-complete.json")
    )
    assert steps and STEPS_PER_EPOCH + 15 <= steps[-1] < 3 * STEPS_PER_EPOCH, steps
    stopped_at = steps[-1]

    # A new data disk: the study's folder and its record on the VM are gone.
    for folder in (study_dir, cloud.vm.data_mount / "jobs" / STUDY):
        remove_on_vm(cloud, folder)
    cloud.vm.boot()
    started = time.monotonic()
    done = cloud.make(*verb, timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    wall = time.monotonic() - started
    log = cloud.make("logs", f"RUN={STUDY}", timeout=600).stdout
    assert f"restored study {STUDY} from gs://{cloud.bucket}/runs/{STUDY}" in log, log[-3000:]
    assert f"restored checkpoint-{stopped_at} from gs://{cloud.bucket}/checkpoints/{STUDY}/trial-001" in log

    after = study_trials(cloud)
    states = [st for _, st, _ in after]
    assert states.count("COMPLETE") == 2 and states[1] == "FAIL", after  # the retry of trial 1 completed
    assert after[0] == before[0]  # trial 0 kept as it was, not run again
    retry = next(n for n, st, _ in after if n > 1 and st == "COMPLETE")
    manifest = json.loads((study_dir / "trial-001" / "manifest.json").read_text())
    assert manifest["tuning"]["trial"] == retry and manifest["tuning"]["retries_trial"] == 1
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert not (study_dir / "trial-000" / "model").exists()  # its weights stayed in the bucket
    status = json.loads(
        cloud._client().bucket(cloud.bucket).blob(f"runs/{STUDY}/study.json").download_as_bytes()
    )
    assert status["state"] == "finished" and status["complete"] == 2
    assert cloud.in_bucket(f"runs/{STUDY}/best.yaml") and cloud.in_bucket(f"runs/{STUDY}/trials.csv")
    # The study is one row of make runs, finished, its best value shown.
    runs = cloud.make("runs", "FORMAT=csv", timeout=300)
    assert runs.returncode == 0, runs.stderr[-2000:]
    (row,) = [line for line in runs.stdout.splitlines() if line.startswith(f"{STUDY},")]
    assert ",finished," in row and f"{status['metric']}={status['best']['value']:.4f}" in row, row
    assert not [line for line in runs.stdout.splitlines() if line.startswith("trial-")]
    print(json.dumps({"cloud_tune": {"soft_off_to_power_off_s": round(off_s, 2),
                                     "resume_to_study_end_s": round(wall, 1)}}))  # fmt: skip
