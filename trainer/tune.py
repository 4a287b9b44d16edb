"""Hyperparameter search with Optuna: `make tune` (python -m trainer.tune).

The search space and the study's settings are a YAML file of their own (config/tune.yaml), beside the run
config it varies (config/<mode>.yaml, or --config): each hyperparameter is a dotted run-config key with a
distribution. Every trial is a real run of the trainer, in-process, one at a time: its own run folder
(runs/<study>/trial-NNN: manifest, metrics, model, checkpoints), so any trial can be inspected, predicted
with and compared. Each evaluation's metric is reported to Optuna, and a trial the pruner finds hopeless
stops after that evaluation: it finishes as a run (its manifest says `tuning.pruned`) and costs only the
steps it ran.

Why not `Trainer.hyperparameter_search`: it re-creates the model per trial through `model_init` inside one
Trainer, leaves no run folder per trial, and under distributed launchers its trials are not synced across
processes (transformers #18609, #27487). Here a trial is exactly a `make train` run.

Resumable: the study lives in Optuna's storage (default SQLite, runs/<study>/study.db). A study folder is
worked by one `make tune` at a time (a lock), so a trial still RUNNING in the storage at the start belongs
to a process that is gone (kill -9, a power-off): it is marked FAIL and retried, as is a trial stopped by
Ctrl-C or SIGTERM. The retry (Optuna's RetryFailedTrialCallback: same parameters, the reported values
kept) runs in the interrupted trial's folder, so the trainer resumes it from its last checkpoint; a trial
that failed by an error is not retried. The study ends when it holds `n_trials` complete or pruned trials.

At the end (and whenever the study is already complete): runs/<study>/best.yaml (the best trial's resolved
config as a run config: `make train CONFIG=runs/<study>/best.yaml` trains it again), trials.csv and the
table printed, and Optuna's optimization history and parameter importances as PNGs (matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from trainer.config import (
    CONFIG_DIR,
    EVAL_METRICS,
    MODES,
    Config,
    choose_mode,
    config_file,
    load_config,
    parse_override,
    read_yaml,
)
from trainer.errors import ConfigError, OneLineParser, UserError, report

log = logging.getLogger("trainer.tune")

TUNE_FILE = CONFIG_DIR / "tune.yaml"
KINDS = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "threshold", "none")
DIRECTIONS = ("maximize", "minimize")
STUDY_KEYS = {
    "name", "n_trials", "metric", "direction", "timeout_minutes", "sampler", "seed", "pruner", "storage",
    "workers",
}  # fmt: skip
STUDY_FILE = "study.json"  # the study's state for the run manager and `make runs` (trainer/run_state.py)
PRUNER_KEYS = {"name", "n_startup_trials", "n_warmup_steps", "percentile", "lower", "upper"}
# A study in a database several machines share (study.storage): each running trial beats this often, and one
# silent for the grace period is failed and retried (its machine is gone) by whichever worker looks next.
HEARTBEAT_S, HEARTBEAT_GRACE_S = 30, 120
MAX_ERRORS_IN_A_ROW = 3  # trials failing by an error one after another: the study stops (not a search)


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a dotted run-config key and its distribution."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]

    def edges(self) -> list[Any]:
        """The values the run config must accept for the whole range to be valid."""
        if self.kind == "categorical":
            return list(self.choices)
        return [int(v) if self.kind == "int" else float(v) for v in (self.low, self.high)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pruner:
    name: str = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 0
    percentile: float = 25.0
    lower: float | None = None
    upper: float | None = None

    def build(self):
        import optuna

        if self.name == "median":
            return optuna.pruners.MedianPruner(self.n_startup_trials, self.n_warmup_steps)
        if self.name == "percentile":
            return optuna.pruners.PercentilePruner(
                self.percentile, self.n_startup_trials, self.n_warmup_steps
            )
        if self.name == "threshold":
            return optuna.pruners.ThresholdPruner(self.lower, self.upper, self.n_warmup_steps)
        return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Spec:
    """The study, checked whole before any trial starts."""

    name: str
    n_trials: int
    metric: str
    direction: str
    space: tuple[Param, ...]
    timeout_minutes: float | None = None
    sampler: str = "tpe"
    seed: int = 42
    pruner: Pruner = field(default_factory=Pruner)
    storage: str | None = None
    workers: int | None = None
    "trials at a time on this machine, each in a process of its own on one GPU; None: one per GPU"

    def storage_url(self, study_dir: Path) -> str:
        return self.storage or f"sqlite:///{study_dir.resolve() / 'study.db'}"


# ------------------------------------------------------------------------------------------- reading


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _param(key: str, raw: Any, problems: list[str]) -> Param | None:
    where = f"space {key}"
    if not isinstance(raw, dict):
        problems.append(
            f"{where}: give a mapping, e.g. {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}"
        )
        return None
    unknown = sorted(set(raw) - {"type", "low", "high", "log", "choices"})
    if unknown:
        problems.append(f"{where}: unknown setting {unknown[0]!r} (type, low, high, log, choices)")
        return None
    kind = raw.get("type")
    if kind not in KINDS:
        problems.append(f"{where}: type must be one of {', '.join(KINDS)}, got {kind!r}")
        return None
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}: a categorical needs a non-empty list of choices")
            return None
        if len(set(map(repr, choices))) != len(choices):
            problems.append(f"{where}: choices {choices} repeat a value")
            return None
        return Param(key, kind, choices=tuple(choices))
    low, high, log_scale = raw.get("low"), raw.get("high"), raw.get("log", False)
    if not (_number(low) and _number(high)):
        problems.append(f"{where}: a {kind} needs numbers low and high, got {low!r} and {high!r}")
        return None
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        problems.append(f"{where}: an int range needs whole numbers, got {low} and {high}")
        return None
    if not low < high:
        problems.append(f"{where}: the range is empty (low {low} must be below high {high})")
        return None
    if not isinstance(log_scale, bool):
        problems.append(f"{where}: log must be true or false, got {log_scale!r}")
        return None
    if log_scale and low <= 0:
        problems.append(f"{where}: a log range needs low > 0, got {low}")
        return None
    return Param(key, kind, float(low), float(high), log_scale)


def _whole(raw: dict, key: str, default: int, least: int, problems: list[str], where: str = "study") -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        problems.append(f"{where}.{key} must be a whole number >= {least}, got {value!r}")
        return default
    return value


def read_spec(path: Path, base: Config, check: Any, overrides: dict[str, Any] | None = None) -> Spec:
    """The tune file at `path` against the run config `base`; `check(key, value)` loads the run config with
    that one value set (raising ConfigError when the trainer would refuse it). Every problem at once."""
    raw = read_yaml(path)
    problems: list[str] = []
    unknown = sorted(set(raw) - {"study", "space"})
    if unknown:
        problems.append(f"{path}: unknown section {unknown[0]!r} (study, space)")
    study = raw.get("study") or {}
    if not isinstance(study, dict):
        raise ConfigError([f"{path}: study must be a mapping of settings"])
    study = {**study, **(overrides or {})}
    extra = sorted(set(study) - STUDY_KEYS)
    if extra:
        problems.append(f"study: unknown setting {extra[0]!r} ({', '.join(sorted(STUDY_KEYS))})")
    name = str(study.get("name") or "tune")
    from trainer import run_state

    if not run_state.valid_name(name):
        problems.append(f"study.name {name!r}: a study name has {run_state.RUN_NAME_RULE}")
    n_trials = _whole(study, "n_trials", 12, 1, problems)
    es = base.train.early_stopping
    metric = study.get("metric") or es.metric
    if metric not in EVAL_METRICS:
        problems.append(
            f"study.metric {metric!r} is not a metric the run produces: one of {', '.join(EVAL_METRICS)}"
        )
    default_direction = (
        ("maximize" if es.mode == "max" else "minimize")
        if metric == es.metric
        else ("minimize" if metric == "eval_loss" else "maximize")
    )
    direction = study.get("direction") or default_direction
    if direction not in DIRECTIONS:
        problems.append(f"study.direction must be maximize or minimize, got {direction!r}")
    timeout = study.get("timeout_minutes")
    if timeout is not None and not (_number(timeout) and timeout > 0):
        problems.append(f"study.timeout_minutes must be a number > 0 or null, got {timeout!r}")
    sampler = study.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        problems.append(f"study.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    seed = _whole(study, "seed", 42, 0, problems)
    pruner = _pruner(study.get("pruner", "median"), problems)
    workers = study.get("workers", "auto")
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        problems.append(f"study.workers must be auto (one per GPU) or a whole number >= 1, got {workers!r}")
    storage = study.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        problems.append(
            f"study.storage must be a database URL (sqlite:///path, postgresql://...), got {storage!r}"
        )
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        problems.append(f"{path}: the space is empty: give at least one hyperparameter under `space:`")
        space_raw = {}
    params = [p for key, value in space_raw.items() if (p := _param(str(key), value, problems))]
    for param in params:
        for value in param.edges():
            try:
                check(param.key, value)
            except ConfigError as exc:
                problems.append(f"space {param.key} = {value!r}: {exc.problems[0]}")
                break
    if problems:
        raise ConfigError(problems)
    return Spec(
        name=name, n_trials=n_trials, metric=metric, direction=direction, space=tuple(params),
        timeout_minutes=float(timeout) if timeout is not None else None, sampler=sampler, seed=seed,
        pruner=pruner, storage=storage, workers=None if workers == "auto" else workers,
    )  # fmt: skip


def _pruner(raw: Any, problems: list[str]) -> Pruner:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        problems.append(f"study.pruner: a name ({', '.join(PRUNERS)}) or a mapping with `name`, got {raw!r}")
        return Pruner()
    extra = sorted(set(raw) - PRUNER_KEYS)
    if extra:
        problems.append(f"study.pruner: unknown setting {extra[0]!r} ({', '.join(sorted(PRUNER_KEYS))})")
    name = raw.get("name", "median")
    if name not in PRUNERS:
        problems.append(f"study.pruner.name must be one of {', '.join(PRUNERS)}, got {name!r}")
        return Pruner()
    lower, upper = raw.get("lower"), raw.get("upper")
    if name == "threshold" and not (_number(lower) or _number(upper)):
        problems.append("study.pruner: threshold needs a number `lower` (maximize) or `upper` (minimize)")
    percentile = raw.get("percentile", 25.0)
    if not (_number(percentile) and 0 < percentile < 100):
        problems.append(f"study.pruner.percentile must be in (0, 100), got {percentile!r}")
        percentile = 25.0
    return Pruner(
        name=name,
        n_startup_trials=_whole(raw, "n_startup_trials", 3, 0, problems, "study.pruner"),
        n_warmup_steps=_whole(raw, "n_warmup_steps", 0, 0, problems, "study.pruner"),
        percentile=float(percentile),
        lower=float(lower) if _number(lower) else None,
        upper=float(upper) if _number(upper) else None,
    )


# ------------------------------------------------------------------------------------------- a trial


class PruningCallback(TrainerCallback):
    """Reports each evaluation's metric to the trial (those of an interrupted attempt too, from the
    resumed state), and stops training after an evaluation the pruner finds hopeless."""

    def __init__(self, trial, metric: str, maximize: bool):
        self.trial, self.metric, self.maximize = trial, metric, maximize
        self.pruned_at: int | None = None
        self.best: float | None = None

    def _values(self, history: list[dict]) -> list[tuple[int, float]]:
        return [(int(e["step"]), float(e[self.metric])) for e in history if self.metric in e and "step" in e]

    def on_train_begin(self, args, state, control, **kwargs):
        reported = (
            set(self.trial.intermediate_values) if hasattr(self.trial, "intermediate_values") else set()
        )
        for step, value in self._values(state.log_history):
            if step not in reported:
                self.trial.report(value, step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None or not state.is_world_process_zero:
            return
        self.trial.report(float(value), state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            step, number = state.global_step, self.trial.number
            log.info("trial %d pruned at step %d (%s %.4f)", number, step, self.metric, value)
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        values = [v for _, v in self._values(state.log_history)]
        if values:
            self.best = max(values) if self.maximize else min(values)


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """One `make tune` per study folder: a RUNNING trial found at the start is then a dead process's."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / ".tune.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another make tune works on {study_dir} now: wait for it, or tune another study (--study)"
            ) from None
        yield


class StudySync:
    """A cloud study's records in the bucket, beside its trials: gs://.../runs/<study>/ holds study.db (a
    consistent copy of the SQLite storage, pushed when a trial starts and when it ends), study.json and, at
    the end, the outcome files; each trial syncs itself as a run under runs/<study>/trial-NNN (checkpoints
    under checkpoints/<study>/trial-NNN). A new disk (a preempted VM's replacement) restores the database and
    the trials' records before the study opens; the trials' models stay in the bucket (make fetch)."""

    def __init__(self, url: str, study_dir: Path):
        from trainer.storage import BucketSync

        self.study_dir = study_dir
        self.bucket = BucketSync(url, study_dir.name)

    def restore(self) -> int:
        """On a disk without the study's database: its records from the bucket (none there: a new study)."""
        if (self.study_dir / "study.db").exists():
            return 0
        base, count = self.bucket.run_prefix + "/", 0
        for blob in self.bucket.client.list_blobs(self.bucket.bucket, prefix=base):
            rel = blob.name[len(base) :]
            parts = rel.split("/")
            if not rel or "model" in parts[1:2] or ".." in parts:
                continue  # a trial's weights stay in the bucket
            dest = self.study_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(dest))
            count += 1
        if count:
            log.info("restored study %s from %s (%d files)", self.study_dir.name, self.bucket.url, count)
        return count

    def push(self, *files: Path) -> None:
        """study.db (SQLite's online backup: a consistent copy while other workers write), study.json and
        `files` to the bucket."""
        db = self.study_dir / "study.db"
        with tempfile.TemporaryDirectory(dir=self.study_dir) as tmp:
            copy = Path(tmp) / "study.db"
            if db.exists():
                with contextlib.closing(sqlite3.connect(db)) as source, \
                        contextlib.closing(sqlite3.connect(copy)) as dest:  # fmt: skip
                    source.backup(dest)
            present = [f for f in (copy, self.study_dir / STUDY_FILE, *files) if f.is_file()]
            for path in present:
                blob = self.bucket.bucket.blob(f"{self.bucket.run_prefix}/{path.name}")
                blob.upload_from_filename(str(path))


def write_status(tuner: Tuner, state: str) -> None:
    """runs/<study>/study.json: how far the study is, for the VM's run manager and `make runs` (read by
    trainer/run_state.py: a study whose state says running with no process left was interrupted)."""
    from optuna.trial import TrialState

    study = tuner.study
    trials = study.get_trials(deepcopy=False) if study is not None else []
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        pick = max if tuner.spec.direction == "maximize" else min
        top = pick(complete, key=lambda t: t.value)
        best = {"trial": top.number, "value": top.value, "params": top.params}
    costs = [_manifest(t).get("estimated_cost_usd") for t in trials]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        started = json.loads((tuner.study_dir / STUDY_FILE).read_text(encoding="utf-8"))["started_at"]
    except (OSError, ValueError, KeyError, TypeError):
        started = now
    status = {
        "kind": "study", "study": tuner.spec.name, "state": state, "metric": tuner.spec.metric,
        "direction": tuner.spec.direction, "n_trials": tuner.spec.n_trials,
        "complete": len(complete), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials), "best": best,
        "estimated_cost_usd": round(sum(c for c in costs if isinstance(c, int | float)), 4),
        "started_at": started, "updated_at": now,
    }  # fmt: skip
    tuner.study_dir.mkdir(parents=True, exist_ok=True)
    tmp = tuner.study_dir / f".{STUDY_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    tmp.replace(tuner.study_dir / STUDY_FILE)


class Tuner:
    """One study: its folder, storage, the objective and the outcome files."""

    def __init__(
        self, spec: Spec, config_path: Path, mode: str, overrides: dict[str, Any], base: Config,
        study_dir: Path | None = None, worker: int = 0,
    ):  # fmt: skip
        self.spec, self.config_path, self.mode, self.overrides = spec, config_path, mode, overrides
        self.study_dir = study_dir or Path(base.runtime.output_dir).parent / spec.name
        self.worker = worker
        self.study = None
        # A cloud study with the default SQLite storage copies its records to the bucket (StudySync); one
        # on a database several workers reach keeps them there.
        bucket = base.runtime.bucket if base.mode == "cloud" and not spec.storage else None
        self.sync = StudySync(bucket, self.study_dir) if bucket else None
        self._ask_lock: Any = None

    def trial_config(self, params: dict[str, Any], folder: Path) -> Config:
        return load_config(self.config_path, self.mode, {**self.overrides, **params,
                                                         "runtime.output_dir": str(folder)})  # fmt: skip

    def open(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The heartbeat of a shared study is marked experimental: said once in the README, not per process.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        url = self.spec.storage_url(self.study_dir)
        sampler = (
            optuna.samplers.TPESampler(seed=self.spec.seed)
            if self.spec.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=self.spec.seed)
        )
        try:
            # The study's own SQLite file is worked by one make tune at a time (its lock): a trial found
            # RUNNING there is a gone process's. A shared database has live trials of other machines: those
            # gone are told by their heartbeat instead.
            beats = {"heartbeat_interval": HEARTBEAT_S, "grace_period": HEARTBEAT_GRACE_S,
                     "heartbeat_stale_trial_callback": self._stale} if self.spec.storage else {}  # fmt: skip
            storage = optuna.storages.RDBStorage(url, **beats)
            study = optuna.create_study(
                storage=storage, study_name=self.spec.name, direction=self.spec.direction,
                sampler=sampler, pruner=self.spec.pruner.build(), load_if_exists=True,
            )  # fmt: skip
        except Exception as exc:  # SQLAlchemy's and the drivers' own errors, whatever the database
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"study.storage {url!r} cannot be opened: {first}") from None
        if study.direction.name.lower() != self.spec.direction:
            raise UserError(
                f"study {self.spec.name} in {url} was made to {study.direction.name.lower()}, not "
                f"{self.spec.direction}: name another study (study.name or --study)"
            )
        self.study = study
        return study

    def retry_interrupted(self) -> None:
        """Trials a gone process left RUNNING become FAIL; each interrupted one (not yet retried) is
        retried once more, in its own folder, from its checkpoint."""
        from optuna.storages import RetryFailedTrialCallback
        from optuna.trial import TrialState

        study = self.study
        assert study is not None
        if self.spec.storage:
            import optuna

            optuna.storages.fail_stale_trials(study)  # each stale one through _stale: retried
        retried = {
            n for t in study.get_trials(deepcopy=False) for n in RetryFailedTrialCallback.retry_history(t)
        }
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING and not self.spec.storage:
                study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                log.info("trial %d was interrupted (its process is gone): retrying it", trial.number)
        for trial in study.get_trials(deepcopy=False):
            if self.counted() >= self.spec.n_trials:
                break  # the study is done: a retry would wait in the storage for ever
            if (
                trial.state == TrialState.FAIL
                and trial.user_attrs.get("interrupted")
                and trial.number not in retried
            ):
                RetryFailedTrialCallback(max_retry=3, inherit_intermediate_values=True)(study, trial)

    def _stale(self, study, trial) -> None:
        """A trial of a shared study whose heartbeat stopped (its machine is gone): failed, marked
        interrupted, and retried with its parameters (in its folder, wherever the retry runs)."""
        from optuna.storages import RetryFailedTrialCallback

        log.info("trial %d stopped beating (its machine is gone): retrying it", trial.number)
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        RetryFailedTrialCallback(max_retry=3, inherit_intermediate_values=True)(study, trial)

    def objective(self, trial) -> float:
        import optuna
        from optuna.storages import RetryFailedTrialCallback

        from trainer.run import Hooks, run

        params = {p.key: p.suggest(trial) for p in self.spec.space}
        # The trial as stored (a retry's system attributes say which trials it retries).
        history = RetryFailedTrialCallback.retry_history(trial.study._storage.get_trial(trial._trial_id))
        first = history[0] if history else trial.number
        folder = self.study_dir / f"trial-{first:03d}"
        trial.set_user_attr("run_dir", str(folder))
        trial.set_user_attr("interrupted", False)
        trial.set_user_attr("worker", self.worker)
        self._release_ask_lock()  # the trial is in the storage: another worker may ask for the next
        cfg = self.trial_config(params, folder)
        pruning = PruningCallback(trial, self.spec.metric, self.spec.direction == "maximize")
        if self.sync:
            # In the bucket before its first checkpoint: a new disk retries it with these parameters.
            self.sync.push()

        def entry() -> dict[str, Any]:
            return {"tuning": {
                "study": self.spec.name, "trial": trial.number,
                "retries_trial": history[-1] if history else None,
                "params": params, "metric": self.spec.metric, "pruned": pruning.pruned_at is not None,
                "pruned_at_step": pruning.pruned_at, "worker": self.worker,
                "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            }}  # fmt: skip

        where = f" (resuming trial {first}'s folder)" if history else ""
        log.info("trial %d%s: %s", trial.number, where, ", ".join(f"{k}={v}" for k, v in params.items()))
        try:
            run(cfg, hooks=Hooks((pruning,), entry, bucket_name=f"{self.study_dir.name}/{folder.name}"))
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
        if pruning.best is None:
            raise UserError(f"trial {trial.number} logged no {self.spec.metric}: no evaluation ran")
        return pruning.best

    def counted(self, running: bool = False) -> int:
        """Complete and pruned trials (with `running`: and those running now, on any worker)."""
        from optuna.trial import TrialState

        assert self.study is not None
        states = (TrialState.COMPLETE, TrialState.PRUNED, *((TrialState.RUNNING,) if running else ()))
        return len(self.study.get_trials(deepcopy=False, states=states))

    def _release_ask_lock(self) -> None:
        if self._ask_lock is not None:
            self._ask_lock.close()
            self._ask_lock = None

    def _claim_next(self) -> bool:
        """Whether this worker may start a trial: fewer than `n_trials` are complete, pruned or running.
        Several workers on one machine check and create the trial under one lock (released once the trial is
        in the storage), so the study never runs more trials than asked."""
        handle = open(self.study_dir / ".ask.lock", "a")  # noqa: SIM115 (held until the trial exists)
        fcntl.flock(handle, fcntl.LOCK_EX)
        if self.counted(running=True) >= self.spec.n_trials:
            handle.close()
            return False
        self._ask_lock = handle
        return True

    def _trial_ended(self, study, trial) -> None:
        write_status(self, "running")
        if self.sync:
            self.sync.push()

    def optimize(self) -> None:
        """Trials one at a time until `n_trials` are complete or pruned (or the time budget is spent)."""
        from optuna.trial import TrialState

        study = self.study
        assert study is not None
        deadline = time.monotonic() + self.spec.timeout_minutes * 60 if self.spec.timeout_minutes else None
        errors = 0
        while self.counted() < self.spec.n_trials:
            if deadline is not None and time.monotonic() > deadline:
                log.warning(
                    "study.timeout_minutes (%g) reached: no new trial started", self.spec.timeout_minutes
                )
                break
            if not self._claim_next():
                break  # the other workers run the trials left
            log.info("study %s: %d of %d trials done", self.spec.name, self.counted(), self.spec.n_trials)
            try:
                study.optimize(self.objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                               callbacks=[self._trial_ended])  # fmt: skip
            finally:
                self._release_ask_lock()
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == self.worker]
            last = mine[-1] if mine else study.get_trials(deepcopy=False)[-1]
            errors = errors + 1 if last.state == TrialState.FAIL else 0
            if errors >= MAX_ERRORS_IN_A_ROW:
                raise UserError(
                    f"{errors} trials in a row failed (the last: trial {last.number}, see "
                    f"{last.user_attrs.get('run_dir', self.study_dir)}/training.log): the study stops"
                )


# ------------------------------------------------------------------------------------------- the outcome


def _manifest(trial) -> dict:
    folder = trial.user_attrs.get("run_dir")
    try:
        return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8")) if folder else {}
    except (OSError, ValueError):
        return {}


def trial_rows(study, spec: Spec) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        manifest = _manifest(trial)
        retried = trial.system_attrs.get("failed_trial")
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower()
            + (" (interrupted)" if trial.user_attrs.get("interrupted") else ""),
            spec.metric: "" if trial.value is None else f"{trial.value:.4f}",
            **{p.key: trial.params.get(p.key, "") for p in spec.space},
            "steps": (manifest.get("training") or {}).get("global_steps", ""),
            "wall_s": (manifest.get("timing") or {}).get("wall_seconds", ""),
            "cost_usd": manifest.get("estimated_cost_usd", ""),
            "retries": "" if retried is None else retried,
            "run_dir": trial.user_attrs.get("run_dir", ""),
        })  # fmt: skip
    return rows


def write_outcome(tuner: Tuner) -> list[str]:
    """best.yaml, trials.csv and the plots; the lines to print."""
    study, spec, out = tuner.study, tuner.spec, tuner.study_dir
    assert study is not None
    rows = trial_rows(study, spec)
    with open(out / "trials.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    lines = _table(rows)
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return [
            *lines,
            f"tune: no trial completed (every one pruned or failed): no best.yaml; {out}/trials.csv",
        ]
    best = study.best_trial
    resolved = Path(best.user_attrs["run_dir"]) / "config.resolved.yaml"
    if not resolved.is_file():  # a shared study's best trial that ran on another machine
        return [
            *lines,
            f"tune: best trial {best.number}: {spec.metric} {best.value:.4f}; it ran elsewhere, its run "
            f"config is {resolved} there",
        ]
    tree = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    tree.pop("mode", None)
    tree.setdefault("runtime", {})["output_dir"] = str(out / "best-run")
    header = (
        f"# The best trial of study {spec.name}: trial {best.number}, {spec.metric} {best.value:.4f}\n"
        f"# ({', '.join(f'{k}={v}' for k, v in best.params.items())}). Train it again with\n"
        f"#   make train CONFIG={out / 'best.yaml'}\n"
    )
    (out / "best.yaml").write_text(header + yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    lines += [
        f"tune: best trial {best.number}: {spec.metric} {best.value:.4f} "
        f"({', '.join(f'{k}={v}' for k, v in best.params.items())})",
        f"tune: {out / 'best.yaml'} (make train CONFIG={out / 'best.yaml'}), {out / 'trials.csv'}",
        *_plots(study, out),
    ]
    return lines


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = [c for c in rows[0] if c != "run_dir"]
    cells = [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [columns, *cells]]  # fmt: skip


def _plots(study, out: Path) -> list[str]:
    """Optuna's optimization history and parameter importances, as PNGs (no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    said = []
    for name, plot in (("history.png", plots.plot_optimization_history),
                       ("importances.png", plots.plot_param_importances)):  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            said.append(f"tune: {out / name}")
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances of one trial
            said.append(f"tune: no {name} ({exc})")
    return said


# ------------------------------------------------------------------------------------------- workers


def worker_count(spec: Spec) -> int:
    """study.workers, or one per visible GPU (at least one)."""
    if spec.workers is not None:
        return spec.workers
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def worker_devices(count: int) -> list[str | None]:
    """Each worker's CUDA_VISIBLE_DEVICES: one GPU each (None on a machine without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return [None] * count
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    ids = ids or [str(i) for i in range(torch.cuda.device_count())]
    if count > len(ids):
        raise UserError(
            f"study.workers is {count} but this machine has {len(ids)} GPU(s): one trial per GPU; set "
            f"study.workers: auto or at most {len(ids)}"
        )
    return ids[:count]


def run_workers(argv: list[str], count: int) -> int:
    """`count` worker processes, each `python -m trainer.tune ... --worker K` on its own GPU (on a machine
    without one, on its share of the CPU threads), sharing the study's storage; SIGTERM and SIGINT are handed
    to each (each stops its trial at a checkpoint). The workers' worst exit status: 0 when all ended well."""
    devices = worker_devices(count)
    threads = max(1, (os.cpu_count() or 1) // count)
    procs = []
    for k, device in enumerate(devices):
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        else:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        where = f"GPU {device}" if device is not None else f"CPU, {env['OMP_NUM_THREADS']} threads"
        log.info("worker %d on %s", k, where)
        command = [sys.executable, "-m", "trainer.tune", *argv, "--worker", str(k)]
        procs.append(subprocess.Popen(command, env=env, start_new_session=True))

    def hand_over(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, hand_over) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if 130 in codes else max(codes)


def watch_parent() -> None:
    """A worker whose parent is gone (kill -9) stops its trial at a checkpoint, as after SIGTERM: the
    rerun's study lock would otherwise not see it, and retry its trial beside it."""
    parent = os.getppid()

    def check() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=check, daemon=True, name="parent-watch").start()


# ------------------------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m trainer.tune",
        description="Search hyperparameters with Optuna: each trial is a run of the run config with values "
        "from the tune file's space, in runs/<study>/trial-NNN.",
    )
    parser.add_argument(
        "--tune", default=str(TUNE_FILE), help=f"the search space and study (default {TUNE_FILE})"
    )
    parser.add_argument("--config", help="the run config the trials vary (default: config/<mode>.yaml)")
    parser.add_argument("--mode", help=f"{' or '.join(MODES)} (default: $TRAINER_MODE, else local)")
    parser.add_argument("--study", help="the study's name (study.name): its folder runs/<name>")
    parser.add_argument("--trials", help="how many complete or pruned trials (study.n_trials)")
    parser.add_argument("--workers", help="trials at a time, one process per GPU (study.workers; auto)")
    parser.add_argument(
        "--output-dir",
        help="the study's folder (default runs/<study> beside the run config's output_dir); its name is the "
        "study's",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # a worker process of run_workers
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a run config key for every trial (repeatable)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mode = choose_mode(args.mode)
        path = config_file(mode, args.config)
        overrides = dict(parse_override(item) for item in args.set)
        base = load_config(path, mode, overrides)
        study_overrides: dict[str, Any] = {}
        if args.study is not None:
            study_overrides["name"] = args.study
        if args.trials is not None:
            study_overrides["n_trials"] = parse_override(f"n={args.trials}")[1]
        if args.workers is not None:
            study_overrides["workers"] = parse_override(f"n={args.workers}")[1]
        study_dir = Path(args.output_dir) if args.output_dir else None
        if study_dir is not None:
            if args.study is not None and args.study != study_dir.name:
                raise UserError(
                    f"--study {args.study} and --output-dir {study_dir} name two studies: the folder's name "
                    "is the study's; pass one of them"
                )
            study_overrides["name"] = study_dir.name
        spec = read_spec(
            Path(args.tune),
            base,
            lambda key, value: load_config(path, mode, {**overrides, key: value}),
            study_overrides,
        )
        from trainer.cli import setup_logging

        setup_logging()
        tuner = Tuner(spec, path, mode, overrides, base, study_dir, worker=args.worker or 0)
        if args.worker is not None:  # one of run_workers' processes: trials until the study has its number
            watch_parent()
            tuner.open()
            tuner.optimize()
            return 0
        with study_lock(tuner.study_dir):
            lines = run_study(tuner, list(argv if argv is not None else sys.argv[1:]))
    except ConfigError as exc:
        return report("; ".join(exc.problems))
    except UserError as exc:
        return report(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write(
            "tune: interrupted; rerun the same command: finished trials are kept, the interrupted one "
            "resumes from its checkpoint\n"
        )
        return 130
    print("\n".join(lines))
    return 0


def run_study(tuner: Tuner, argv: list[str]) -> list[str]:
    """The study, under its lock: restored from the bucket on a new disk, opened, the interrupted trials
    queued again, its trials run (by this process, or one worker per GPU), the outcome written and copied."""
    if tuner.sync:
        tuner.sync.restore()
    tuner.open()
    tuner.retry_interrupted()
    write_status(tuner, "running")
    state = "interrupted"
    try:
        workers = worker_count(tuner.spec)
        if workers == 1:
            tuner.optimize()
        else:
            code = run_workers(argv, workers)
            if code == 130:
                raise KeyboardInterrupt
            if code != 0:
                raise UserError(f"a worker of study {tuner.spec.name} failed (exit {code}; see above)")
        lines = write_outcome(tuner)
        state = "finished"  # its trials done, or its time budget spent
    except UserError:
        state = "failed"
        raise
    finally:
        write_status(tuner, state)
        if tuner.sync:
            names = ("trials.csv", "best.yaml", "history.png", "importances.png")
            tuner.sync.push(*(tuner.study_dir / name for name in names))
    return lines


if __name__ == "__main__":
    sys.exit(main())
