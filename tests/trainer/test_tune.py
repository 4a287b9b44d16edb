"""`make tune` (trainer/tune.py) on the tiny model: real Optuna studies (SQLite storage, TPE, pruners) whose
trials are real runs of the trainer, each in its own run folder.

- a study ends with the asked number of trials, writes trials.csv, the plots and a best.yaml that trains
  again to the best trial's metric;
- a pruned trial is pruned in Optuna's storage and in its manifest, and ran fewer steps;
- kill -9 mid-trial, then the same command: the finished trials are kept, the interrupted one is retried
  in its folder and resumes from its checkpoint, and the study ends with the asked number, none twice;
- bad input is one line and exit 2 before any trial starts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, write_run_config
from trainer import tune

pytestmark = pytest.mark.slow

SPACE = """
space:
  train.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  train.batch_size: {type: categorical, choices: [8, 16]}
"""


def files(tmp_path: Path, model: Path, data: Path, study: str, epochs: int = 2, space: str = SPACE) -> tuple:
    runs = tmp_path / "runs"
    config = write_run_config(
        tmp_path / "run.yaml", model, data, epochs=epochs, batch_size=16,
        train_extra="  early_stopping: {enabled: false}\nruntime: {output_dir: " + str(runs / "base") + "}\n",
    )  # fmt: skip
    tune_file = tmp_path / "tune.yaml"
    tune_file.write_text(study + space)
    return config, tune_file, runs


def command(config: Path, tune_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer.tune", "--mode", "local", "--config", str(config),
            "--tune", str(tune_file), *extra]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_tune(config: Path, tune_file: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(config, tune_file, *extra), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def load(runs: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs / name / 'study.db'}")


def manifest(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def test_a_study_ends_with_its_trials_the_table_the_plots_and_a_best_config_that_trains_again(
    tmp_path, tiny_model_dir, tiny_csv
):
    study = "study:\n  name: s1\n  n_trials: 3\n  seed: 7\n  pruner: none\n"
    config, tune_file, runs = files(tmp_path, tiny_model_dir, tiny_csv, study)
    done = run_tune(config, tune_file)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = runs / "s1"
    trials = load(runs, "s1").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for trial in trials:
        m = manifest(trial.user_attrs["run_dir"])
        assert m["tuning"]["trial"] == trial.number and m["tuning"]["params"] == trial.params
        assert m["tuning"]["pruned"] is False
        assert trial.user_attrs["run_dir"] == str(folder / f"trial-{trial.number:03d}")
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 3
    assert {"trial", "eval_f1_macro", "train.learning_rate", "train.batch_size", "steps", "wall_s"} <= set(
        rows[0]
    )
    for png in ("history.png", "importances.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    best = load(runs, "s1").best_trial
    assert f"tune: best trial {best.number}: eval_f1_macro {best.value:.4f}" in done.stdout
    # make train CONFIG=runs/<study>/best.yaml: the same run again, to the same metric.
    train = [sys.executable, "-m", "trainer", "--mode", "local", "--config", str(folder / "best.yaml")]
    again = subprocess.run(train, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = manifest(folder / "best-run")
    assert rerun["training"]["best_metric"]["eval_f1_macro"] == pytest.approx(best.value, abs=1e-6)
    # Rerunning the finished study starts no trial and writes the outcome again.
    done = run_tune(config, tune_file)
    assert done.returncode == 0 and len(load(runs, "s1").get_trials()) == 3, done.stderr[-2000:]


def test_a_pruned_trial_stops_early_and_says_so(tmp_path, tiny_model_dir, tiny_csv):
    # Macro-F1 never reaches 1.01: the threshold pruner prunes each trial at its first evaluation.
    study = "study:\n  name: s2\n  n_trials: 2\n  pruner: {name: threshold, lower: 1.01}\n"
    config, tune_file, runs = files(tmp_path, tiny_model_dir, tiny_csv, study, epochs=3)
    done = run_tune(config, tune_file)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(runs, "s2").get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for trial in trials:
        m = manifest(trial.user_attrs["run_dir"])
        steps_per_epoch = -(-240 // trial.params["train.batch_size"])
        assert m["tuning"]["pruned"] is True and m["tuning"]["pruned_at_step"] == steps_per_epoch
        assert m["training"]["global_steps"] == steps_per_epoch  # one epoch of the three: the cost it ran
    assert "tune: no trial completed" in done.stdout


def test_kill_9_mid_study_then_rerun_keeps_finished_trials_and_resumes_the_interrupted_one(
    tmp_path, tiny_model_dir, tiny_csv
):
    study = "study:\n  name: s3\n  n_trials: 3\n  pruner: none\n"
    config, tune_file, runs = files(tmp_path, tiny_model_dir, tiny_csv, study, epochs=8)
    proc = subprocess.Popen(command(config, tune_file), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoints = runs / "s3" / "trial-001" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/checkpoint-complete.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "trial 1 saved no checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = load(runs, "s3").get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    done = run_tune(config, tune_file)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(runs, "s3").get_trials()
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL", states
    assert trials[0].value == before[0].value  # kept, not run again
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == trials[1].params and retry.user_attrs["run_dir"].endswith("trial-001")
    resumed = manifest(retry.user_attrs["run_dir"])
    assert resumed["training"]["resumed_from"], "the retried trial started over instead of resuming"
    assert resumed["tuning"]["retries_trial"] == 1 and resumed["timing"]["attempts"] == 2
    folders = [t.user_attrs["run_dir"] for t in trials if t.state.name == "COMPLETE"]
    assert len(set(folders)) == 3  # no trial ran twice


@pytest.mark.parametrize(
    ("study", "space", "message"),
    [
        ("study: {n_trials: 2}\n", "space: {}\n", "the space is empty"),
        ("study: {n_trials: 0}\n", SPACE, "study.n_trials must be a whole number >= 1, got 0"),
        ("study: {metric: eval_bleu}\n", SPACE, "study.metric 'eval_bleu' is not a metric the run produces"),
        ("study: {storage: 'sqlite:////nonexistent/dir/s.db'}\n", SPACE, "cannot be opened"),
        ("study: {}\n", "space:\n  train.learning_rat: {type: float, low: 0.001, high: 0.01}\n",
         "space train.learning_rat = 0.001: unknown key train.learning_rat"),
        ("study: {}\n", "space:\n  train.batch_size: {type: categorical, choices: [8, 0]}\n",
         "space train.batch_size = 0: train.batch_size must be"),
        ("study: {}\n", "space:\n  train.warmup_ratio: {type: float, low: 0.2, high: 0.1}\n",
         "the range is empty"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2_before_any_trial(
    tmp_path, tiny_model_dir, tiny_csv, study, space, message
):
    config, tune_file, runs = files(tmp_path, tiny_model_dir, tiny_csv, study, space=space)
    done = run_tune(config, tune_file, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("trainer: error: ") and message in line, line
    assert not list(runs.glob("*/trial-*")), "a trial started"


def test_the_shipped_tune_file_is_valid_against_the_local_config():
    from trainer.config import config_file, load_config

    path = config_file("local")
    base = load_config(path, "local")
    spec = tune.read_spec(tune.TUNE_FILE, base, lambda key, value: load_config(path, "local", {key: value}))
    assert spec.metric == "eval_f1_macro" and spec.direction == "maximize" and spec.n_trials == 12
    assert {p.key for p in spec.space} >= {"train.learning_rate", "train.batch_size", "train.epochs"}
