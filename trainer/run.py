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

from transformers import set_seed

from trainer import artifacts
from trainer.checks import check_before_training
from trainer.config import Config
from trainer.data import Splits, load_splits, tokenize
from trainer.modeling import load_model, load_tokenizer
from trainer.precision import DeviceInfo, PrecisionDecision, check_gpu, decide_precision, detect_device
from trainer.run_folder import RunFolder
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
    folder = plan.folder

    # Every input is checked before the output folder is touched.
    resume_from = folder.guard(cfg.runtime.overwrite, cfg.runtime.resume)
    prepared = prepare(cfg)
    sync = _bucket_sync(plan)
    if sync:
        sync.check()

    if cfg.runtime.overwrite:
        folder.clear()
    folder.start(cfg)
    handler = attach_file_log(folder.log_file)
    try:
        log.info("precision: %s", plan.precision.reason)
        if plan.precision.warning:
            log.warning(plan.precision.warning)
        if resume_from:
            log.info("resuming from %s", resume_from)
        splits = prepared.splits
        datasets_ = prepared.encoded(cfg.model.max_length)
        args = build_training_args(cfg, plan.precision, plan.device, folder.checkpoints_dir)
        extra = []
        if sync:
            from trainer.storage import CheckpointSyncCallback

            extra.append(CheckpointSyncCallback(sync))
        model, tokenizer = prepared.model, prepared.tokenizer
        trainer = build_trainer(
            cfg, model, tokenizer, datasets_, args, plan.device, folder.tensorboard_dir, extra
        )
        outcome = train_and_evaluate(trainer, splits.labels, datasets_, resume_from)
        if not trainer.is_world_process_zero():
            return RunResult(folder.path, {}, {})
        metrics, manifest = folder.finish(
            outcome,
            splits.labels,
            cfg.train.early_stopping.metric,
            lambda: build_manifest(cfg, plan, splits, outcome, started, resume_from),
        )
        if sync:
            sync.upload_run(folder.path)
            log.info("artifacts in %s", sync.url)
        return RunResult(folder.path, metrics, manifest)
    finally:
        for name in ("trainer", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _bucket_sync(plan: RunPlan):
    if not plan.bucket:
        return None
    from trainer.storage import BucketSync

    return BucketSync(plan.bucket, plan.folder.name)


def build_manifest(
    cfg, plan: RunPlan, splits: Splits, outcome, started: float, resume_from
) -> dict[str, Any]:
    wall = time.time() - started
    train_metrics = outcome.train_metrics
    state = outcome.trainer.state
    return {
        "run_name": plan.folder.name,
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
            "resumed_from": resume_from,
            "effective_batch_size": cfg.train.batch_size
            * cfg.train.gradient_accumulation_steps
            * max(1, outcome.trainer.args.world_size),
        },
        "timing": {
            "wall_seconds": round(wall, 2),
            "train_seconds": round(train_metrics.get("train_runtime", 0.0), 2),
            "train_samples_per_second": train_metrics.get("train_samples_per_second"),
            "train_steps_per_second": train_metrics.get("train_steps_per_second"),
        },
        "estimated_cost_usd": round(wall / 3600 * cfg.runtime.hourly_cost_usd, 4),
        "bucket": plan.bucket,
        "test_f1_macro": outcome.test_report["f1_macro"],
    }
