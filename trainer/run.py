"""One run, step by step: plan -> prepare (data, tokenizer, seeded model) -> train -> evaluate -> save.

`prepare` is the start of every pipeline (this run, the padding benchmark's arms); the run folder's
layout, guard and reading back belong to `trainer.run_folder`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, set_seed

from trainer import artifacts, checkpoints
from trainer.checks import check_before_training
from trainer.config import Config
from trainer.data import Splits, load_splits, tokenize
from trainer.errors import UserError
from trainer.interrupt import sigterm_as_interrupt
from trainer.lock import RunLock
from trainer.modeling import load_model, load_tokenizer
from trainer.precision import DeviceInfo, PrecisionDecision, check_gpu, decide_precision, detect_device
from trainer.ranks import Ranks
from trainer.run_folder import ATTEMPTS, RunFolder
from trainer.timing import PhaseClock
from trainer.training import build_trainer, build_training_args, train_and_evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """Everything that depends on the mode or the device, derived once."""

    folder: RunFolder
    device: DeviceInfo
    precision: PrecisionDecision
    bucket: str | None
    "where checkpoints and artifacts are synced: only in cloud mode, only when a bucket is set"

    @classmethod
    def derive(cls, cfg: Config, device: DeviceInfo) -> RunPlan:
        check_gpu(cfg.runtime.require_gpu, device)
        return cls(
            folder=RunFolder(cfg.runtime.output_dir),
            device=device,
            precision=decide_precision(cfg.train.precision, device),
            bucket=cfg.runtime.bucket if cfg.mode == "cloud" else None,
        )


@dataclass
class Prepared:
    """What a pipeline starts from: the data split, the tokenizer and the seeded model."""

    splits: Splits
    tokenizer: Any
    model: Any

    def encoded(self, max_length: int, encode: Callable = tokenize) -> dict[str, Any]:
        """The three splits as model inputs: `data.tokenize` (truncated at max_length, no padding) unless
        the caller encodes otherwise (the benchmark's padded arm)."""
        return {
            name: encode(getattr(self.splits, name), self.tokenizer, max_length)
            for name in ("train", "val", "test")
        }


def prepare(cfg: Config) -> Prepared:
    """config -> data -> tokenizer -> seeded model. The seed is set right before the model load: the new
    classifier head's initialisation is part of the seeded run, so two runs of one config start alike."""
    splits = load_splits(cfg.data, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.name)
    check_before_training(cfg, splits)
    set_seed(cfg.train.seed)
    model = load_model(cfg.model.name, splits.labels)
    return Prepared(splits, tokenizer, model)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any]


def attach_file_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("trainer", "transformers"):
        logging.getLogger(name).addHandler(handler)
    return handler


def run(cfg: Config, device: DeviceInfo | None = None) -> RunResult:
    started = time.time()
    plan = RunPlan.derive(cfg, device or detect_device())
    ranks = Ranks.start(plan.device)
    if not ranks.main:
        logging.getLogger("trainer").setLevel(logging.WARNING)  # progress is said once, by the main process
    folder = plan.folder
    lock = RunLock(folder.path)
    with sigterm_as_interrupt() as stopper, lock:
        if folder.path.is_dir():
            lock.acquire()  # at once: a second run on this folder hears it before doing any work
        # Every input is checked, on every process alike, before the output folder is touched.
        folder.guard(cfg.runtime.overwrite, cfg.runtime.resume)
        if ranks.local_main:
            folder.check_writable()
        clock = PhaseClock()
        with clock.phase("loading"):
            prepared = prepare(cfg)
        needed = checkpoints.estimated_bytes(prepared.model, prepared.tokenizer)
        folder.check_room(needed)
        sync = _bucket_sync(plan) if ranks.main else None
        if sync:
            sync.check()
        ranks.wait()  # every process has checked the folder before one of them writes there
        handler = None
        with ranks.local_main_first():  # the others wait at accelerate's barrier, then read the folder
            if ranks.local_main:
                found = _claim(cfg, folder, lock, sync, ranks)
                handler = attach_file_log(folder.log_file) if ranks.main else None
                folder.remove_incomplete(found)  # said in training.log
            else:
                found = checkpoints.scan(folder.checkpoints_dir)
        try:
            return _train(cfg, plan, prepared, found, stopper, sync, needed, started, ranks, clock)
        finally:
            if handler:
                for name in ("trainer", "transformers"):
                    logging.getLogger(name).removeHandler(handler)
                handler.close()


def _claim(cfg: Config, folder: RunFolder, lock: RunLock, sync, ranks: Ranks) -> checkpoints.Scan:
    """Each machine's main process makes the folder its own: created and locked, restored from the
    bucket, cleared by --overwrite; the resolved config is written by the main process alone."""
    if not lock.held:
        folder.create()
        lock.acquire()
    if sync and not cfg.runtime.overwrite and cfg.runtime.resume:
        _restore_from_bucket(folder, sync)
    found = folder.guard(cfg.runtime.overwrite, cfg.runtime.resume)  # again, now that it is ours
    if cfg.runtime.overwrite:
        folder.clear()
    folder.create()
    if ranks.main:
        folder.start(cfg)
    return found


class AttemptRecorder(TrainerCallback):
    """Each checkpoint moves the attempt's `last_seen` and `last_checkpoint_step` in attempts.json."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.folder.update_attempt(last_checkpoint_step=state.global_step)


def _train(
    cfg, plan: RunPlan, prepared: Prepared, found, stopper, sync, needed, started, ranks: Ranks, clock
):
    folder = plan.folder
    log.info("precision: %s", plan.precision.reason)
    if plan.precision.warning:
        log.warning(plan.precision.warning)
    main = ranks.main  # in a multi-process run, one process writes the run's records
    resume_from = found.newest
    if resume_from:
        log.info("resuming from %s", resume_from)
    if main:
        folder.begin_attempt(resume_from, started)
    splits = prepared.splits
    with clock.phase("tokenizing"):
        datasets_ = prepared.encoded(cfg.model.max_length)
    args = build_training_args(cfg, plan.precision, plan.device, folder.checkpoints_dir)
    extra: list[TrainerCallback] = [AttemptRecorder(folder)]
    if sync:
        from trainer.storage import CheckpointSyncCallback

        extra.append(CheckpointSyncCallback(sync, folder.path / ATTEMPTS))
    trainer = build_trainer(
        cfg,
        prepared.model,
        prepared.tokenizer,
        datasets_,
        args,
        plan.device,
        folder.tensorboard_dir,
        extra,
        last=[stopper],
    )
    try:
        outcome = train_and_evaluate(
            trainer, splits.labels, datasets_, str(resume_from) if resume_from else None, clock
        )
        if not trainer.is_world_process_zero():
            return RunResult(folder.path, {}, {})
        clock.start("saving")  # ends when the manifest is built, last
        metrics, manifest = folder.finish(
            outcome,
            splits.labels,
            cfg.train.early_stopping.metric,
            lambda: build_manifest(cfg, plan, splits, outcome, resume_from, ranks),
        )
    except KeyboardInterrupt:
        if main:
            folder.end_attempt("interrupted")
        raise
    except Exception as exc:
        if main:
            folder.end_attempt("failed")
        full = None if isinstance(exc, UserError) else folder.disk_full_error(needed)
        if full:
            raise full from None
        raise
    if sync:
        sync.upload_run(folder.path)
        log.info("artifacts in %s", sync.url)
    return RunResult(folder.path, metrics, manifest)


def _restore_from_bucket(folder: RunFolder, sync) -> None:
    """A run with no checkpoint on this disk (a new disk, another zone) and no finished artifacts resumes
    from the newest complete checkpoint in the bucket (trainer.storage), before the resume lookup."""
    if folder.is_finished() or folder.last_checkpoint():
        return
    sync.restore(folder.checkpoints_dir, folder.path / ATTEMPTS)


def _bucket_sync(plan: RunPlan):
    if not plan.bucket:
        return None
    from trainer.storage import BucketSync

    return BucketSync(plan.bucket, plan.folder.name)


def build_manifest(
    cfg, plan: RunPlan, splits: Splits, outcome, resume_from: Path | None, ranks: Ranks | None = None
) -> dict[str, Any]:
    """Built last (RunFolder.finish): closes this attempt in attempts.json, so the timings, the cost and
    the resume points cover the whole run, every attempt of it."""
    folder = plan.folder
    folder.end_attempt("finished")
    attempts = folder.attempts()
    wall = sum(a["last_seen"] - a["started"] for a in attempts)
    this = attempts[-1] if attempts else {"started": time.time(), "last_seen": time.time()}
    train_metrics = outcome.train_metrics
    state = outcome.trainer.state
    return {
        "run_name": folder.name,
        "mode": cfg.mode,
        "command": sys.argv,
        "model": cfg.model.name,
        "versions": artifacts.package_versions(),
        "git_commit": artifacts.git_commit(),
        "data": {"sources": splits.sources, "rows": splits.counts(), "labels": splits.labels},
        "environment": {"in_container": artifacts.in_container(), **artifacts.hardware(plan.device)},
        "precision": plan.precision.precision,
        "precision_reason": plan.precision.reason,
        "training": {
            "global_steps": state.global_step,
            "epochs_completed": state.epoch,
            "stopped_early": outcome.stopped_early,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": {cfg.train.early_stopping.metric: state.best_metric},
            "resumed_from": str(resume_from) if resume_from else None,
            "resume_points": [
                {"checkpoint": a["resumed_from"], "step": a["resumed_at_step"], "at": _iso(a["started"])}
                for a in attempts
                if a.get("resumed_from")
            ],
            "train_loss": whole_run_train_loss(state.log_history),
            "effective_batch_size": cfg.train.batch_size
            * cfg.train.gradient_accumulation_steps
            * max(1, outcome.trainer.args.world_size),
            # What the Trainer loaded per forward pass and accumulated per step (batching split).
            "device_batch_size": outcome.trainer.args.per_device_train_batch_size,
            "accumulated_batches": outcome.trainer.args.gradient_accumulation_steps,
            "batching": outcome.trainer.batching_used,
        },
        "distributed": _distributed(outcome.trainer.args.world_size, ranks),
        "hardware_use": outcome.hardware_use,
        "timing": {
            "phase_seconds": outcome.clock.rounded(),
            "wall_seconds": round(wall, 2),
            "attempts": len(attempts),
            "this_attempt_wall_seconds": round(this["last_seen"] - this["started"], 2),
            "train_seconds": round(train_metrics.get("train_runtime", 0.0), 2),
            "train_samples_per_second": train_metrics.get("train_samples_per_second"),
            "train_steps_per_second": train_metrics.get("train_steps_per_second"),
        },
        "estimated_cost_usd": round(wall / 3600 * cfg.runtime.hourly_cost_usd, 4),
        "bucket": plan.bucket,
        "test_f1_macro": outcome.test_report["f1_macro"],
    }


def _distributed(world_size: int, ranks: Ranks | None) -> dict[str, int]:
    """How many processes trained (one per GPU), how many per machine and on how many machines."""
    world = max(1, world_size)
    per_machine = ranks.per_machine if ranks else 1
    return {"world_size": world, "processes_per_machine": per_machine, "machines": world // per_machine}


def whole_run_train_loss(history: list[dict[str, Any]]) -> float | None:
    """Mean training loss over the run's logged steps, every attempt (the Trainer's own `train_loss`
    covers the last attempt only): each logged loss weighted by the steps since the previous one."""
    total, steps, previous = 0.0, 0, 0
    for record in history:
        if "loss" in record and "step" in record:
            n = record["step"] - previous
            total, steps, previous = total + record["loss"] * n, steps + n, record["step"]
    return round(total / steps, 6) if steps else None


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))
