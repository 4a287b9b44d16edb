"""What a run's artifacts say: the manifest (`build_manifest`, built last from the run's facts), the facts
about the environment it records, and the plots.

Where each artifact goes, and the reading back, belong to `trainer.run_folder`.

The manifest's `git_commit` is the commit of the code that ran: `git rev-parse HEAD` where the package
sits in a git checkout, otherwise (on the VM, in the container: no .git) the environment variable
TRAINER_GIT_COMMIT, which the cloud launch sets to the commit it shipped; None when neither says.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.attempts import Summary
    from trainer.config import Config
    from trainer.data import Splits
    from trainer.ranks import Ranks
    from trainer.run import RunPlan
    from trainer.training import BatchUse, TrainOutcome

log = logging.getLogger(__name__)

GIT_COMMIT_ENV = "TRAINER_GIT_COMMIT"
_COMMIT = re.compile(r"[0-9a-f]{7,64}(-dirty)?")  # -dirty: the shipped tree had uncommitted changes


def build_manifest(
    cfg: Config,
    plan: RunPlan,
    splits: Splits,
    outcome: TrainOutcome,
    *,
    resume_from: Path | None,
    attempts: Summary,
    batch: BatchUse,
    ranks: Ranks | None = None,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest, built last: `attempts` is the attempts record with this attempt closed, so the
    timings, the cost and the resume points cover the whole run, every attempt of it; `batch` is the batch
    the run really trained with (capped at the training split); `tracking`: `Reporting.manifest()`, each
    tracker's run (ids and where it lives, URIs without credentials) and those left out."""
    train_metrics = outcome.train_metrics
    state = outcome.trainer.state
    return {
        "run_name": plan.folder.name,
        "mode": cfg.mode,
        "command": sys.argv,
        "model": cfg.model.name,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "started_at": started_at(plan.folder.attempts.records()),
        "data": {"sources": splits.sources, "rows": splits.counts(), "labels": splits.labels},
        "environment": {"in_container": in_container(), **hardware(plan.device)},
        "precision": plan.precision.precision,
        "precision_reason": plan.precision.reason,
        "training": {
            "global_steps": state.global_step,
            "epochs_completed": state.epoch,
            "epochs_planned": planned_epochs(state.max_steps, state.global_step, state.epoch),
            "stopped_early": outcome.stopped_early,
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": {cfg.train.early_stopping.metric: state.best_metric},
            "resumed_from": str(resume_from) if resume_from else None,
            "resume_points": attempts.resume_points,
            "train_loss": whole_run_train_loss(state.log_history),
            # The batch of one optimizer step, as trained: train.batch_size x gradient accumulation x
            # processes, capped at the training split (the configured one, when it is larger, beside it).
            "effective_batch_size": batch.used,
            "configured_effective_batch_size": batch.configured,
            # What the Trainer loaded per forward pass and accumulated per step (batching split).
            "device_batch_size": batch.device_batch,
            "accumulated_batches": batch.accumulated,
            "batching": outcome.trainer.batching_used,
        },
        "distributed": _distributed(outcome.trainer.args.world_size, ranks),
        "hardware_use": outcome.hardware_use,
        "timing": {
            "phase_seconds": outcome.clock.rounded(),
            "wall_seconds": round(attempts.wall_seconds, 2),
            "attempts": attempts.count,
            "this_attempt_wall_seconds": round(attempts.this_attempt_seconds, 2),
            "train_seconds": round(train_metrics.get("train_runtime", 0.0), 2),
            "train_samples_per_second": train_metrics.get("train_samples_per_second"),
            "train_steps_per_second": train_metrics.get("train_steps_per_second"),
        },
        "estimated_cost_usd": round(attempts.wall_seconds / 3600 * cfg.runtime.hourly_cost_usd, 4),
        "bucket": plan.bucket,
        **(tracking or {"tracking": {}, "tracking_skipped": {}}),
        "test_f1_macro": outcome.test_report["f1_macro"],
    }


def _distributed(world_size: int, ranks: Ranks | None) -> dict[str, int]:
    """How many processes trained (one per GPU), how many per machine and on how many machines."""
    world = max(1, world_size)
    per_machine = ranks.per_machine if ranks else 1
    return {"world_size": world, "processes_per_machine": per_machine, "machines": world // per_machine}


def started_at(attempts: list[dict[str, Any]]) -> str | None:
    """When the run first started (its first attempt, UTC, ISO 8601); None without an attempts record."""
    first = attempts[0].get("started") if attempts and isinstance(attempts[0], dict) else None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first)) if isinstance(first, int | float) else None


def planned_epochs(max_steps: int, global_step: int, epoch: float | None) -> float | None:
    """The epochs the run was set to train: the Trainer's planned optimizer steps (train.epochs, or
    train.max_steps when set) in epochs of the steps per epoch it trained; None before its first step."""
    if not max_steps or not global_step or not epoch:
        return None
    return round(max_steps * epoch / global_step, 2)


def whole_run_train_loss(history: list[dict[str, Any]]) -> float | None:
    """Mean training loss over the run's logged steps, every attempt (the Trainer's own `train_loss`
    covers the last attempt only): each logged loss weighted by the steps since the previous one."""
    total, steps, previous = 0.0, 0, 0
    for record in history:
        if "loss" in record and "step" in record:
            n = record["step"] - previous
            total, steps, previous = total + record["loss"] * n, steps + n, record["step"]
    return round(total / steps, 6) if steps else None


def package_versions() -> dict[str, str]:
    names = [
        "torch",
        "transformers",
        "accelerate",
        "datasets",
        "tokenizers",
        "scikit-learn",
        "numpy",
        "pandas",
    ]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    from trainer import __version__

    out["trainer"] = __version__
    return out


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the running code: git where the package (or `where`) is in a checkout, else
    $TRAINER_GIT_COMMIT (a hex commit id, `-dirty` when the launcher shipped uncommitted changes;
    anything else is ignored with a warning), else None."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=where or Path(__file__).resolve().parent,
        )
        if res.returncode == 0 and _COMMIT.fullmatch(res.stdout.strip()):
            return res.stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git rev-parse: %s", exc)
    from_env = os.environ.get(GIT_COMMIT_ENV, "").strip().lower()
    if not from_env:
        return None
    if not _COMMIT.fullmatch(from_env):
        log.warning("%s=%r is not a git commit id: the manifest records none", GIT_COMMIT_ENV, from_env)
        return None
    return from_env


def in_container() -> bool:
    """Set by our Dockerfile. (/.dockerenv is not used: CI sandboxes are often containers themselves.)"""
    return os.environ.get("TRAINER_IN_CONTAINER") == "1"


def hardware(device) -> dict[str, Any]:
    return {
        "device": device.kind,
        "gpu_name": device.name if device.is_cuda else None,
        "gpu_count": device.count,
        "compute_capability": ".".join(map(str, device.compute_capability))
        if device.compute_capability
        else None,
        # A cloud VM's provisioning model, as its .env says (TRAINER_SPOT); None elsewhere.
        "spot": {"true": True, "false": False}.get(os.environ.get("TRAINER_SPOT", "").lower()),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def plot_confusion_matrix(report: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = report["confusion_matrix"]["labels"]
    matrix = np.asarray(report["confusion_matrix"]["matrix"])
    size = max(4.0, 1.2 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (macro-F1 {report['f1_macro']:.3f})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(history: list[dict[str, Any]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="train loss", alpha=0.7)
    if evals:
        ax_loss.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="val loss")
        if all(metric in h for h in evals):
            ax_metric.plot([h["step"] for h in evals], [h[metric] for h in evals], "o-", color="C2")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_metric.set_xlabel("step")
    ax_metric.set_title(f"{metric} (early-stopping metric)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
