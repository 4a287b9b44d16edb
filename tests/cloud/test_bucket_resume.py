"""Resuming from the bucket when the disk has nothing: only complete checkpoints (the marker goes up last
and a copy without it is passed over), with the early-stopping state (the patience counter) restored.

Real parts: `python -m trainer` in cloud mode on the tiny model, stopped with SIGTERM as `docker stop` or
a spot VM's soft-off stops it, and gcp-storage-emulator (a GCS JSON API server on loopback) as the bucket,
reached through google-cloud-storage (and, where the stop's upload is cut off by the power-off, through
the least-privilege gate of tests/standins/gcs_gate.py). A "new disk" is the run folder deleted between
the two starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cloud.conftest import emulator_client
from tests.standins.gcs_gate import Gate, Policy
from tests.support import ROOT, write_run_config
from trainer import checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.gcs]

STEPS_PER_EPOCH = 240 // 4  # the tiny CSV's 240 training rows in batches of 4


class Runs:
    """Starts of one run of the trainer in cloud mode, its bucket the emulator's."""

    def __init__(self, config: Path, out: Path, emulator: str, bucket: str):
        self.config, self.out, self.emulator, self.bucket = config, out, emulator, bucket

    def start(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "trainer", "--mode", "cloud", "--config", str(self.config),
               "--output-dir", str(self.out), "--set", f"runtime.bucket=gs://{self.bucket}",
               "--set", "runtime.require_gpu=false"]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
               "STORAGE_EMULATOR_HOST": self.emulator}  # fmt: skip
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(self) -> str:
        proc = self.start()
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        return stderr

    def start_until(self, step: int) -> subprocess.Popen:
        """Start, and return once `step` is logged (the run goes on)."""
        proc = self.start()
        log = self.out / "training.log"
        deadline = time.monotonic() + 300
        while not (log.is_file() and f"step {step}: " in log.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, f"the run did not reach step {step}"
            time.sleep(0.01)
        return proc

    def sigterm_at(self, step: int) -> int:
        """Start, SIGTERM once `step` is logged; the step of the checkpoint it saved."""
        proc = self.start_until(step)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-3000:]
        saved = checkpoints.step_of(checkpoints.scan(self.out / "checkpoints").newest)
        assert saved is not None and saved >= step
        return saved

    def new_disk(self) -> None:
        shutil.rmtree(self.out)

    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())

    def blobs(self, prefix: str = "") -> dict[str, object]:
        client = emulator_client(self.emulator)
        base = f"checkpoints/{self.out.name}/{prefix}"
        return {b.name[len(base) :]: b for b in client.list_blobs(self.bucket, prefix=base)}


@pytest.fixture
def runs(tmp_path, gcs_emulator, tiny_model_dir, tiny_csv, request):
    bucket = f"resume-{request.node.name.replace('_', '-')[:40].strip('-').lower()}"
    emulator_client(gcs_emulator).create_bucket(bucket)

    def make(epochs: int = 3, extra: str = "", learning_rate: float = 5e-3) -> Runs:
        config = write_run_config(
            tmp_path / "run.yaml",
            tiny_model_dir,
            tiny_csv,
            epochs=epochs,
            learning_rate=learning_rate,
            train_extra="  save_total_limit: 8\n" + extra,
        )
        return Runs(config, tmp_path / "run", gcs_emulator, bucket)

    return make


def test_a_checkpoint_cut_off_mid_upload_is_never_resumed_from(runs):
    run = runs()
    stopped = run.sigterm_at(STEPS_PER_EPOCH + 10)
    # Every checkpoint's marker went up after the checkpoint's other files.
    for step in (STEPS_PER_EPOCH, stopped):
        blobs = run.blobs(f"checkpoint-{step}/")
        marker = blobs.pop(checkpoints.MARKER)
        assert set(blobs) >= {"model.safetensors", "optimizer.pt", "trainer_state.json"}
        assert all(marker.generation > blob.generation for blob in blobs.values()), step
    # The newest copy is cut off before its marker; a newer one has only a file or two.
    run.blobs(f"checkpoint-{stopped}/")[checkpoints.MARKER].delete()
    partial = run.blobs(f"checkpoint-{STEPS_PER_EPOCH}/")
    bucket = emulator_client(run.emulator).bucket(run.bucket)
    for name in ("config.json", "model.safetensors"):
        bucket.copy_blob(partial[name], bucket, partial[name].name.replace(f"-{STEPS_PER_EPOCH}/", "-150/"))

    run.new_disk()
    stderr = run.finish()
    where = f"gs://{run.bucket}/checkpoints/run"
    assert f"skipping {where}/checkpoint-150: no completion marker (cut off mid-upload)" in stderr
    assert f"skipping {where}/checkpoint-{stopped}: no completion marker (cut off mid-upload)" in stderr
    assert f"restored checkpoint-{STEPS_PER_EPOCH} from {where}" in stderr
    manifest = run.manifest()
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{STEPS_PER_EPOCH}")
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert manifest["timing"]["attempts"] == 2  # the first attempt's record came back from the bucket
    assert not any(p.name.startswith(".restore-") for p in (run.out / "checkpoints").iterdir())


class PowerOff(Gate):
    """The gate in front of the emulator, and a power-off in the middle of the stop's upload: once `armed`,
    the first upload goes through and the next one hangs (no answer, as from a VM that is gone) until
    `released`; `holding` says the upload is cut there."""

    def __init__(self, upstream_port: int, policy: Policy):
        super().__init__(upstream_port, policy)
        self.armed, self.holding, self.released = threading.Event(), threading.Event(), threading.Event()
        self.uploads = 0

    def _handler(self):
        gate, base = self, super()._handler()

        class Handler(base):
            def do_POST(self):
                if gate.armed.is_set() and self.path.startswith("/upload/"):
                    gate.uploads += 1
                    if gate.uploads > 1:
                        gate.holding.set()
                        gate.released.wait(300)
                        self.close_connection = True
                        return
                super().do_POST()

        return Handler


def test_a_stop_whose_upload_the_power_off_cuts_resumes_from_the_last_complete_checkpoint(runs):
    """A spot VM's soft-off whose checkpoint does not reach the bucket within the window (a model too big
    for the grace): SIGTERM, the trainer saves the stop's checkpoint on the disk (complete: marker
    written) and starts its upload; the power-off (SIGKILL) cuts the upload after its first file. The disk
    keeps the whole stop checkpoint (a STOP termination keeps the disks); the bucket has the stop's copy
    without its marker, and a run on a new disk resumes from the last complete periodic checkpoint."""
    run = runs()
    direct = run.emulator
    port = int(direct.rsplit(":", 1)[1])
    policy = Policy.from_iam_tf(
        ROOT / "infra" / "iam.tf", "tweet-trainer-vm@demo.iam.gserviceaccount.com", run.bucket
    )
    step = STEPS_PER_EPOCH + 10
    with PowerOff(port, policy) as gate:
        # The trainer's client is the VM's account, through the gate, in both attempts (the emulator
        # records the links it hands out with the address that asked).
        run.emulator = gate.url
        proc = run.start_until(step)
        gate.armed.set()
        proc.send_signal(signal.SIGTERM)
        assert gate.holding.wait(120), "the stop's checkpoint upload did not start"
        proc.kill()  # the power-off
        proc.communicate(timeout=60)
        gate.armed.clear()
        gate.released.set()
        stopped = checkpoints.step_of(checkpoints.scan(run.out / "checkpoints").newest)
        assert stopped is not None and stopped >= step  # the disk has the whole stop checkpoint
        run.emulator = direct  # the owner's view of the bucket
        cut = run.blobs(f"checkpoint-{stopped}/")
        assert cut and checkpoints.MARKER not in cut  # its first file went up, the marker never did
        assert checkpoints.MARKER in run.blobs(f"checkpoint-{STEPS_PER_EPOCH}/")

        run.new_disk()
        run.emulator = gate.url
        stderr = run.finish()
    where = f"gs://{run.bucket}/checkpoints/run"
    assert f"skipping {where}/checkpoint-{stopped}: no completion marker (cut off mid-upload)" in stderr
    assert f"restored checkpoint-{STEPS_PER_EPOCH} from {where}" in stderr
    manifest = run.manifest()
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{STEPS_PER_EPOCH}")
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH


def test_early_stopping_stops_at_the_same_epoch_across_a_resume(runs):
    """min_delta 2.0 on a metric in [0, 1]: nothing improves after the first evaluation, so with patience 2
    the run stops after its third epoch. Stopped in the third epoch (one evaluation without improvement
    counted) and resumed on a new disk, it must still stop there, not an epoch later. The learning rate
    is too small to change a prediction, so the three evaluations tie and the first one is the best: a
    checkpoint saved before the interruption, which has to come back from the bucket."""
    run = runs(
        6,
        "  early_stopping: {enabled: true, patience: 2, min_delta: 2.0, metric: eval_f1_macro, mode: max}\n",
        learning_rate=1e-9,
    )
    stopped = run.sigterm_at(2 * STEPS_PER_EPOCH + 10)
    assert 2 * STEPS_PER_EPOCH < stopped < 3 * STEPS_PER_EPOCH
    state = json.loads(run.blobs(f"checkpoint-{stopped}/")["trainer_state.json"].download_as_bytes())
    counter = state["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]
    assert counter == {"early_stopping_patience_counter": 1}

    run.new_disk()
    run.finish()
    manifest = run.manifest()
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{stopped}")
    assert manifest["training"]["stopped_early"] is True
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH  # not 4 epochs: counter restored
    # The best checkpoint (HF's choice: the highest eval_f1_macro, min_delta aside; one saved before the
    # interruption) came back from the bucket too, so the saved model is the best one.
    final = run.out / "checkpoints" / f"checkpoint-{3 * STEPS_PER_EPOCH}" / "trainer_state.json"
    evals = [(h["eval_f1_macro"], -h["step"]) for h in json.loads(final.read_text())["log_history"]
             if "eval_f1_macro" in h]  # fmt: skip
    assert len(evals) == 3 and len({f1 for f1, _ in evals}) == 1
    best_step = -max(evals)[1]  # the first evaluation with the highest value
    assert best_step == STEPS_PER_EPOCH < stopped
    assert Path(manifest["training"]["best_checkpoint"]).name == f"checkpoint-{best_step}"
    assert (run.out / "checkpoints" / f"checkpoint-{best_step}").is_dir()
