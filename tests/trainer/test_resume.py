"""A run stopped and resumed ends where an uninterrupted run with the same seed ends: the same global
step, metrics, evaluations and weights, with length-grouped batching (the default).

Real processes: `python -m trainer` on the tiny model, stopped as `docker stop` or a spot VM's soft-off
does (SIGTERM) and as the OOM killer does (kill -9), then started again with the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.support import ROOT, logged_step, wait_for, write_run_config
from trainer import checkpoints

INTERRUPTED = "trainer: interrupted; rerun the same command to resume from the last checkpoint"
STEPS_PER_EPOCH = 240 // 4
EPOCHS = 2

pytestmark = pytest.mark.slow


def write_config(path: Path, model_dir: Path, csv: Path, extra: str = "") -> Path:
    """The tiny run with 4-row batches (60 steps an epoch), a log line every step, length-grouped."""
    extra = "  group_by_length: true\n  save_total_limit: 8\n" + extra
    return write_run_config(path, model_dir, csv, epochs=EPOCHS, train_extra=extra)


@pytest.fixture(scope="module")
def configs(tmp_path_factory, tiny_model_dir, tiny_csv) -> dict[str, Path]:
    """By evaluation strategy: the default (each epoch), and every 25 steps (checkpoints mid-epoch)."""
    base = tmp_path_factory.mktemp("resume")
    return {
        "epoch": write_config(base / "epoch.yaml", tiny_model_dir, tiny_csv),
        "steps": write_config(
            base / "steps.yaml",
            tiny_model_dir,
            tiny_csv,
            "  eval_strategy: steps\n  eval_steps: 25\n  early_stopping: {patience: 2}\n",
        ),
    }


def start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "--config", str(config), "--output-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )


def finish(proc: subprocess.Popen) -> str:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return stderr


def summary(out: Path) -> dict:
    """What must not change with an interruption: steps, metrics, the evaluations, the final weights."""
    manifest = json.loads((out / "manifest.json").read_text())
    last = checkpoints.scan(out / "checkpoints").newest
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return {
        "global_steps": manifest["training"]["global_steps"],
        "best_checkpoint": Path(manifest["training"]["best_checkpoint"]).name,
        "metrics": json.loads((out / "metrics.json").read_text()),
        "evals": [(h["step"], h["eval_loss"], h["eval_f1_macro"]) for h in history if "eval_loss" in h],
        "weights": load_file(str(out / "model" / "model.safetensors")),
    }


def numbers(tree, path: str = "") -> dict[str, float]:
    """The numeric leaves of a JSON tree, by their path (metrics.json: reports, confusion matrices)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{path}/{key}").items()}
    if isinstance(tree, list | tuple):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{path}/{i}").items()}
    return {path: tree} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


def assert_same_run(resumed: dict, uninterrupted: dict) -> None:
    import torch

    assert resumed["global_steps"] == uninterrupted["global_steps"]
    assert resumed["best_checkpoint"] == uninterrupted["best_checkpoint"]
    assert numbers(resumed["evals"]) == pytest.approx(numbers(uninterrupted["evals"]), rel=1e-6)
    assert numbers(resumed["metrics"]) == pytest.approx(numbers(uninterrupted["metrics"]), rel=1e-6, abs=1e-9)
    for name, tensor in uninterrupted["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    test = resumed["metrics"]["test"]
    print(
        f"global step {resumed['global_steps']}, test macro-F1 {test['f1_macro']:.6f} "
        f"(uninterrupted {uninterrupted['metrics']['test']['f1_macro']:.6f}), evals {resumed['evals']}"
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, configs) -> dict[str, dict]:
    """The uninterrupted runs of each config, made once when a test first asks."""
    made: dict[str, dict] = {}

    class Runs(dict):
        def __missing__(self, strategy: str) -> dict:
            out = tmp_path_factory.mktemp(f"uninterrupted-{strategy}") / "run"
            finish(start(configs[strategy], out))
            made[strategy] = summary(out)
            return made[strategy]

    return Runs()


def test_kill_9_after_a_mid_epoch_checkpoint_resumes_exactly(tmp_path, configs, uninterrupted):
    """Checkpoints every 25 steps; killed at step 85, the run resumes from checkpoint-75, 15 steps into
    its second epoch (the resume that used to drift with length-grouped batches). Patience 2: the
    uninterrupted run stops early at step 100, so must the resumed one (the patience counter goes on)."""
    out = tmp_path / "run"
    proc = start(configs["steps"], out)
    wait_for(lambda: logged_step(out, 85), "step 85")
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumable = out / "checkpoints" / "checkpoint-75"
    assert checkpoints.scan(out / "checkpoints").newest == resumable
    assert not (out / "manifest.json").exists()

    finish(start(configs["steps"], out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from"] == str(resumable)
    assert [p["step"] for p in manifest["training"]["resume_points"]] == [75]
    assert manifest["timing"]["attempts"] == 2
    assert_same_run(summary(out), uninterrupted["steps"])


def test_sigterm_mid_epoch_saves_exits_130_and_resumes_exactly(tmp_path, configs, uninterrupted):
    """The default config (evaluation and checkpoints each epoch): SIGTERM at step 70 saves a checkpoint
    at the step it stopped, without the evaluation an epoch's end would bring, and exits 130."""
    out = tmp_path / "run"
    proc = start(configs["epoch"], out)
    wait_for(lambda: logged_step(out, STEPS_PER_EPOCH + 10), "step 70")
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("trainer:")] == [INTERRUPTED]
    assert "Traceback" not in stderr
    found = checkpoints.scan(out / "checkpoints")
    assert not found.skipped
    step = checkpoints.step_of(found.newest)
    assert STEPS_PER_EPOCH + 10 <= step < 2 * STEPS_PER_EPOCH, (
        "a checkpoint at the step it stopped, mid-epoch"
    )
    assert f"checkpoint-{step} saved" in (out / "training.log").read_text()
    seconds = (found.newest / checkpoints.MARKER).stat().st_mtime - sent
    print(f"SIGTERM to complete checkpoint-{step} on disk: {seconds:.2f} s")
    assert seconds < 30

    finish(start(configs["epoch"], out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert [p["step"] for p in manifest["training"]["resume_points"]] == [step]
    assert_same_run(summary(out), uninterrupted["epoch"])
