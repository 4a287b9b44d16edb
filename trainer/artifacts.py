"""What a run's artifacts say: the manifest's facts about the environment, and the plots.

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
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GIT_COMMIT_ENV = "TRAINER_GIT_COMMIT"
_COMMIT = re.compile(r"[0-9a-f]{7,64}(-dirty)?")  # -dirty: the shipped tree had uncommitted changes


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
