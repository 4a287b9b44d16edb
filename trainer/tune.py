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
import sys
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
}  # fmt: skip
PRUNER_KEYS = {"name", "n_startup_trials", "n_warmup_steps", "percentile", "lower", "upper"}
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
        pruner=pruner, storage=storage,
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


class Tuner:
    """One study: its folder, storage, the objective and the outcome files."""

    def __init__(self, spec: Spec, config_path: Path, mode: str, overrides: dict[str, Any], base: Config):
        self.spec, self.config_path, self.mode, self.overrides = spec, config_path, mode, overrides
        self.study_dir = Path(base.runtime.output_dir).parent / spec.name
        self.study = None

    def trial_config(self, params: dict[str, Any], folder: Path) -> Config:
        return load_config(self.config_path, self.mode, {**self.overrides, **params,
                                                         "runtime.output_dir": str(folder)})  # fmt: skip

    def open(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = self.spec.storage_url(self.study_dir)
        sampler = (
            optuna.samplers.TPESampler(seed=self.spec.seed)
            if self.spec.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=self.spec.seed)
        )
        try:
            storage = optuna.storages.RDBStorage(url)
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
        retried = {
            n for t in study.get_trials(deepcopy=False) for n in RetryFailedTrialCallback.retry_history(t)
        }
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:
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
        cfg = self.trial_config(params, folder)
        pruning = PruningCallback(trial, self.spec.metric, self.spec.direction == "maximize")

        def entry() -> dict[str, Any]:
            return {"tuning": {
                "study": self.spec.name, "trial": trial.number,
                "retries_trial": history[-1] if history else None,
                "params": params, "metric": self.spec.metric, "pruned": pruning.pruned_at is not None,
                "pruned_at_step": pruning.pruned_at,
            }}  # fmt: skip

        where = f" (resuming trial {first}'s folder)" if history else ""
        log.info("trial %d%s: %s", trial.number, where, ", ".join(f"{k}={v}" for k, v in params.items()))
        try:
            run(cfg, hooks=Hooks((pruning,), entry))
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at}")
        if pruning.best is None:
            raise UserError(f"trial {trial.number} logged no {self.spec.metric}: no evaluation ran")
        return pruning.best

    def counted(self) -> int:
        from optuna.trial import TrialState

        assert self.study is not None
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        return len(self.study.get_trials(deepcopy=False, states=states))

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
            log.info("study %s: %d of %d trials done", self.spec.name, self.counted(), self.spec.n_trials)
            study.optimize(self.objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            last = study.get_trials(deepcopy=False)[-1]
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
        spec = read_spec(
            Path(args.tune),
            base,
            lambda key, value: load_config(path, mode, {**overrides, key: value}),
            study_overrides,
        )
        from trainer.cli import setup_logging

        setup_logging()
        tuner = Tuner(spec, path, mode, overrides, base)
        with study_lock(tuner.study_dir):
            tuner.open()
            tuner.retry_interrupted()
            tuner.optimize()
            lines = write_outcome(tuner)
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


if __name__ == "__main__":
    sys.exit(main())
