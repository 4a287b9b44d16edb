"""One run, top to bottom: plan -> check the folder -> prepare (data, tokenizer, seeded model) -> claim the
folder -> train -> evaluate -> save the results -> close the attempt -> write the manifest, last.

This module orchestrates; it calls the others and none calls back: the run folder's layout, guard and
reading back are `trainer.run_folder`'s, the attempts record `trainer.attempts`'s, the manifest's content
`trainer.artifacts`'s. `prepare` is the start of every pipeline (this run, the padding benchmark's arms).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, set_seed

from trainer import artifacts, checkpoints, tracking
from trainer.attempts import AttemptRecorder
from trainer.checks import check_before_training
from trainer.config import Config
from trainer.data import Splits, load_splits, tokenize
from trainer.errors import UserError
from trainer.interrupt import sigterm_as_interrupt
from trainer.lock import RunLock
from trainer.modeling import load_model, load_tokenizer
from trainer.precision import DeviceInfo, PrecisionDecision, check_gpu, decide_precision, detect_device
from trainer.ranks import Ranks
from trainer.run_folder import RunFolder
from trainer.run_state import FAILED, FINISHED, INTERRUPTED
from trainer.timing import PhaseClock
from trainer.training import BatchUse, build_trainer, build_training_args, train_and_evaluate

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
            folder=RunFolder(cfg.runtime.output_dir),  # `~` and $VARS expanded there, once
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


@dataclass
class Job:
    """What training works with once the folder is checked and the model loaded."""

    cfg: Config
    plan: RunPlan
    ranks: Ranks
    prepared: Prepared
    clock: PhaseClock
    "seconds per phase of this attempt"
    started: float
    "Unix time this attempt started"
    checkpoint_bytes: int
    "what one checkpoint takes on disk (the room checked before the first step)"
    sync: Any = None
    "the bucket sync (`trainer.storage.BucketSync`) on the main process of a cloud run, else None"
    trackers: tracking.Trackers = field(default_factory=lambda: tracking.Trackers(()))
    "train.report_to after the check before training: the trackers reported to, those left out"
    hooks: Hooks | None = None
    "what a caller adds to the run (trainer.tune: a trial's pruning callback, its manifest entry)"


@dataclass(frozen=True)
class Hooks:
    """What a caller of `run` adds: callbacks after the run's own (before the SIGTERM stop), and a function
    whose dict joins the manifest (called when the manifest is built, so it can say how training went)."""

    callbacks: tuple[TrainerCallback, ...] = ()
    manifest: Callable[[], dict[str, Any]] | None = None
    bucket_name: str | None = None
    "the run's name in the bucket (runs/<name>, checkpoints/<name>); None: its folder's name"


def run(cfg: Config, device: DeviceInfo | None = None, hooks: Hooks | None = None) -> RunResult:
    started = time.time()
    plan = RunPlan.derive(cfg, device or detect_device())
    ranks = Ranks.start(plan.device, cfg.runtime.collective_timeout_s)
    # A missing client, or report_required and a tracker that cannot report: exit 2 here, nothing written.
    trackers = tracking.check(cfg.train, probe=ranks.main)
    if not ranks.main:
        logging.getLogger("trainer").setLevel(logging.WARNING)  # progress is said once, by the main process
    folder = plan.folder
    with sigterm_as_interrupt() as stopper, RunLock(folder.path) as lock, ExitStack() as logs:
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
        name = hooks.bucket_name if hooks else None
        sync = _bucket_sync(plan, name) if ranks.main else None
        if sync:
            sync.check()
        # Several machines: each one's main process may restore the checkpoint from the bucket too.
        restorer = sync or (_bucket_sync(plan, name) if ranks.local_main and ranks.machines > 1 else None)
        ranks.wait()  # every process has checked the folder before one of them writes there
        with ranks.local_main_first():  # the others wait at accelerate's barrier, then read the folder
            if ranks.local_main:
                found = _claim(cfg, folder, lock, restorer, ranks.main)
                if ranks.main:
                    logs.enter_context(file_log(folder.log_file))
                folder.remove_incomplete(found)  # said in training.log
            else:
                found = checkpoints.scan(folder.checkpoints_dir)
        resume_from = _agree(folder, ranks, found.newest, restorer)
        job = Job(
            cfg=cfg, plan=plan, ranks=ranks, prepared=prepared, clock=clock, started=started,
            checkpoint_bytes=needed, sync=sync, trackers=trackers, hooks=hooks,
        )  # fmt: skip
        return _train(job, resume_from=resume_from, stopper=stopper)


def _agree(folder: RunFolder, ranks: Ranks, newest: Path | None, restorer) -> Path | None:
    """Every process resumes from the checkpoint the main process chose, or starts afresh with it. With
    several machines each holds its own copy (save_on_each_node); a machine whose disk lacks that one (a
    new disk, a copy the power-off cut short) first takes it from the bucket."""
    if ranks.world_size == 1:
        return newest
    agreed = ranks.gather(checkpoints.step_of(newest) if newest else None)[0]
    if agreed is None:
        return None
    path = folder.checkpoints_dir / f"checkpoint-{agreed}"
    with ranks.local_main_first():
        here = not ranks.local_main or checkpoints.is_complete(path)
        if not here and (restorer is None or restorer.restore(folder.checkpoints_dir, step=agreed) is None):
            raise UserError(
                f"this machine has no complete {path.name}, which the run resumes from, and the "
                "bucket has none to copy: restart the run with --overwrite to train afresh"
            )
    return path


@contextmanager
def file_log(path: Path) -> Iterator[None]:
    """The trainer's and transformers' log records also go to `path` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("trainer", "transformers"):
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in ("trainer", "transformers"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _claim(cfg: Config, folder: RunFolder, lock: RunLock, sync, main: bool) -> checkpoints.Scan:
    """Each machine's main process makes the folder its own: created (here, once) and locked, restored
    from the bucket, cleared by --overwrite; the resolved config is written by the main process alone."""
    if not lock.held:
        folder.create()
        lock.acquire()
    if sync and not cfg.runtime.overwrite and cfg.runtime.resume:
        _restore_from_bucket(folder, sync, main)
    found = folder.guard(cfg.runtime.overwrite, cfg.runtime.resume)  # again, now that it is ours
    if cfg.runtime.overwrite:
        folder.clear()  # what a run writes, not the folder itself
    if main:
        folder.write_config(cfg)
    return found


def _train(job: Job, *, resume_from: Path | None, stopper: TrainerCallback) -> RunResult:
    cfg, plan, folder, sync = job.cfg, job.plan, job.plan.folder, job.sync
    log.info("precision: %s", plan.precision.reason)
    if plan.precision.warning:
        log.warning(plan.precision.warning)
    main = job.ranks.main  # in a multi-process run, one process writes the run's records
    if resume_from:
        log.info("resuming from %s", resume_from)
    attempts = folder.attempts
    if main:
        attempts.begin(resume_from, job.started)
    splits = job.prepared.splits
    with job.clock.phase("tokenizing"):
        datasets_ = job.prepared.encoded(cfg.model.max_length)
    if main:
        for name, why in job.trackers.skipped.items():
            log.warning(tracking.skipped_warning(name, why))
    reporting = tracking.Reporting(job.trackers, folder.tensorboard_dir)
    args = build_training_args(
        cfg,
        plan.precision,
        plan.device,
        folder.checkpoints_dir,
        job.trackers.reporting,
        folder.name,
        machines=job.ranks.machines,
    )
    batch = BatchUse.of(cfg.train, args.world_size, len(datasets_["train"]))
    if main and batch.warning():
        log.warning(batch.warning())
    extra: list[TrainerCallback] = [AttemptRecorder(attempts)]
    if sync:
        from trainer.storage import CheckpointSyncCallback

        extra.append(CheckpointSyncCallback(sync, attempts.path))
    if job.hooks:
        extra.extend(job.hooks.callbacks)
    trainer = build_trainer(
        cfg,
        job.prepared.model,
        job.prepared.tokenizer,
        datasets_,
        args,
        plan.device,
        folder.tensorboard_dir,
        extra,
        last=[stopper],
        reporting=reporting,
    )
    try:
        outcome = train_and_evaluate(
            trainer, splits.labels, datasets_, str(resume_from) if resume_from else None, job.clock
        )
        if not trainer.is_world_process_zero():
            return RunResult(folder.path, {}, {})
        job.clock.start("saving")  # ends when the manifest is built, last
        metrics = folder.write_results(outcome, splits.labels, cfg.train.early_stopping.metric)
        attempts.end(FINISHED)  # before the manifest: its timings cover every attempt, this one whole
        manifest = artifacts.build_manifest(
            cfg,
            plan,
            splits,
            outcome,
            resume_from=resume_from,
            attempts=attempts.summary(),
            batch=batch,
            ranks=job.ranks,
            tracking=reporting.manifest(),
        )
        if job.hooks and job.hooks.manifest:
            manifest.update(job.hooks.manifest())
        folder.write_manifest(manifest)  # the "finished" marker, last
    except KeyboardInterrupt:
        reporting.close("KILLED")
        if main:
            attempts.end(INTERRUPTED)
        raise
    except Exception as exc:
        reporting.close("FAILED")
        if main:
            attempts.end(FAILED)
        full = None if isinstance(exc, UserError) else folder.disk_full_error(job.checkpoint_bytes)
        if full:
            raise full from None
        raise
    reporting.close()
    if sync:
        sync.upload_run(folder.path)
        log.info("artifacts in %s", sync.url)
    return RunResult(folder.path, metrics, manifest)


def _restore_from_bucket(folder: RunFolder, sync, main: bool = True) -> None:
    """A run with no checkpoint on this disk (a new disk, another zone) and no finished artifacts resumes
    from the newest complete checkpoint in the bucket (trainer.storage), before the resume lookup. The
    run's records (the attempts) come along on the main process's machine only."""
    if folder.is_finished() or folder.last_checkpoint():
        return
    sync.restore(folder.checkpoints_dir, folder.attempts.path if main else None)


def _bucket_sync(plan: RunPlan, name: str | None = None):
    if not plan.bucket:
        return None
    from trainer.storage import BucketSync

    return BucketSync(plan.bucket, name or plan.folder.name)
