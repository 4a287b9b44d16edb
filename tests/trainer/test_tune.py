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
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT, require, write_run_config
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


def test_two_workers_run_trials_side_by_side_and_the_study_has_exactly_its_number(
    tmp_path, tiny_model_dir, tiny_csv
):
    # study.workers: 2 on a machine without a GPU: two worker processes (one per GPU on a VM), each on its
    # share of the CPU threads, taking trials from the one study until it has its number.
    study = "study:\n  name: s5\n  n_trials: 3\n  workers: 2\n  pruner: none\n"
    config, tune_file, runs = files(tmp_path, tiny_model_dir, tiny_csv, study)
    done = run_tune(config, tune_file)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker 0 on CPU" in done.stderr and "worker 1 on CPU" in done.stderr, done.stderr[-3000:]
    trials = load(runs, "s5").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # none more: the ask is under one lock
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(a[1] > b[0] for a, b in itertools.pairwise(spans)), "no two trials ran at once"
    assert len({t.user_attrs["run_dir"] for t in trials}) == 3
    status = json.loads((runs / "s5" / "study.json").read_text())
    assert status["state"] == "finished" and status["complete"] == 3 and status["n_trials"] == 3
    assert status["best"]["trial"] == load(runs, "s5").best_trial.number
    from trainer import run_state

    assert run_state.folder_state(runs / "s5") == "finished"
    status["state"] = "running"  # as a study killed without a word leaves it: interrupted
    (runs / "s5" / "study.json").write_text(json.dumps(status))
    assert run_state.folder_state(runs / "s5") == "interrupted"


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
        ("study: {workers: 0}\n", SPACE, "study.workers must be auto (one per GPU) or a whole number >= 1"),
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


@pytest.fixture
def postgres():
    """A PostgreSQL server of Debian's package on loopback, in a folder of its own, stopped at the end (run
    as the `postgres` user when the test runs as root: initdb refuses root). Its URL for study.storage."""
    import pwd
    import shutil
    import socket

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    require(bins, "PostgreSQL is not installed (Debian's postgresql package: .ci/apt-packages.txt)")
    require(__import__("importlib").util.find_spec("psycopg"), "psycopg is not installed (the dev extra)")
    bin_dir = bins[-1].parent
    as_user: list[str] = []
    # Not under pytest's folders: those are root's alone (0700), and the server runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        shutil.chown(home, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = home / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "optuna"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home}"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                    str(home / "log"), "-w", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://optuna@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


def test_two_machines_share_one_study_through_postgresql(tmp_path, tiny_model_dir, tiny_csv, postgres):
    # Two `make tune`s, each with a folder (a disk) of its own, on one study in a PostgreSQL database (what
    # two VMs would reach): each takes trials until the study has its number; every trial runs once.
    study = f"study:\n  name: s6\n  n_trials: 4\n  pruner: none\n  storage: {postgres}\n"
    procs = []
    for machine in ("a", "b"):
        (tmp_path / machine).mkdir()
        config, tune_file, _ = files(tmp_path / machine, tiny_model_dir, tiny_csv, study)
        procs.append(subprocess.Popen(command(config, tune_file), cwd=ROOT, env=env(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    import optuna

    trials = optuna.load_study(study_name="s6", storage=postgres).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # Both machines check the count before a trial; at the same moment, each may start one more.
    assert 4 <= len(complete) <= 5 and len(complete) == len(trials), [t.state.name for t in trials]
    folders = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(folders)) == len(folders)
    assert {Path(f).parents[1].parent.name for f in folders} == {"a", "b"}, folders  # both took trials
    for folder in folders:
        assert manifest(folder)["tuning"]["study"] == "s6"
    # Each machine wrote the outcome; best.yaml where the best trial's folder is.
    best = optuna.load_study(study_name="s6", storage=postgres).best_trial
    here = Path(best.user_attrs["run_dir"]).parents[0]
    assert (here / "best.yaml").is_file()
