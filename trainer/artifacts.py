"""Artifacts of a run: output-folder guard, model, labels, metrics, plots, manifest."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from trainer.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
# What a run of ours leaves in its folder; anything else means the folder is not ours to touch.
OWN_ENTRIES = {
    MANIFEST,
    CHECKPOINTS,
    "model",
    "labels.json",
    "metrics.json",
    "config.resolved.yaml",
    "training.log",
    "tensorboard",
    "confusion_matrix.png",
    "learning_curve.png",
}


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt = run_dir / CHECKPOINTS
    return get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None


def check_output_dir(run_dir: Path, overwrite: bool, resume: bool) -> str | None:
    """Decide what to do with the output folder before anything is written. Returns a checkpoint to
    resume from, or None. Raises UserError rather than touching a finished or foreign folder."""
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise UserError(f"output folder {run_dir} is a file: choose another --output-dir")
    entries = {p.name for p in run_dir.iterdir()}
    if not entries:
        return None
    foreign = sorted(entries - OWN_ENTRIES)
    if foreign:
        raise UserError(
            f"output folder {run_dir} holds files that are not from a training run ({foreign[0]}, ...): "
            "choose an empty or new --output-dir"
        )
    if overwrite:
        return None
    if MANIFEST in entries:
        raise UserError(
            f"output folder {run_dir} already holds a finished run: pass --overwrite to replace it, "
            "or choose another --output-dir"
        )
    checkpoint = last_checkpoint(run_dir)
    if checkpoint and resume:
        return checkpoint
    if checkpoint:
        raise UserError(
            f"output folder {run_dir} holds an unfinished run and runtime.resume is false: "
            "pass --overwrite to start again"
        )
    return None


def clear_output_dir(run_dir: Path) -> None:
    """Called with --overwrite, after all inputs were validated: remove only what a run writes."""
    for name in OWN_ENTRIES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


def git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


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
