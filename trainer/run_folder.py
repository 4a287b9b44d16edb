"""The run folder: the one owner of its layout, of writing it and of reading it back.

    <run>/
      model/                 model + tokenizer (safetensors), written by the HF Trainer's save_model
      labels.json            {"labels": [...], "label2id": {...}}
      metrics.json           {"validation": report, "test": report}
      config.resolved.yaml   the run's config (file < cloud_overrides < flags), written at the start
      training.log           the run's log
      checkpoints/           the Trainer's checkpoints (resume)
      tensorboard/           TensorBoard event files
      confusion_matrix.png   test split
      learning_curve.png     losses and the early-stopping metric
      manifest.json          written last: its presence marks the run finished

`trainer.run` writes a run through `RunFolder`, `trainer.predict` reads one back through it, and so do
the cloud verbs (`make fetch`, `make runs`): `RunFolder(path).is_finished()`, `.manifest()`,
`.resolved_config()`. No other module spells a file name of the run folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.config import Config, load_resolved, to_yaml
from trainer.errors import UserError

MODEL = "model"
LABELS = "labels.json"
METRICS = "metrics.json"
RESOLVED_CONFIG = "config.resolved.yaml"
LOG = "training.log"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
CONFUSION_MATRIX = "confusion_matrix.png"
LEARNING_CURVE = "learning_curve.png"
MANIFEST = "manifest.json"
# What a run of ours leaves in its folder; anything else means the folder is not ours to touch.
OWN_ENTRIES = frozenset(
    {
        MODEL,
        LABELS,
        METRICS,
        RESOLVED_CONFIG,
        LOG,
        CHECKPOINTS,
        TENSORBOARD,
        CONFUSION_MATRIX,
        LEARNING_CURVE,
        MANIFEST,
    }
)


def write_json(path: Path, payload: Any) -> None:
    """Whole or not at all: written beside the target, then renamed over it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunFolder:
    """One run's folder: where each artifact lives, the guard before a run writes, and the reading back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ where each artifact lives

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    # ------------------------------------------------------------------ the guard, before a run writes

    def last_checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(self.checkpoints_dir)) if self.checkpoints_dir.is_dir() else None

    def guard(self, overwrite: bool, resume: bool) -> str | None:
        """Decide what to do with the folder before anything is written: a checkpoint to resume from,
        or None. Raises UserError rather than touching a finished or foreign folder."""
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise UserError(f"output folder {self.path} is a file: choose another --output-dir")
        entries = {p.name for p in self.path.iterdir()}
        if not entries:
            return None
        foreign = sorted(entries - OWN_ENTRIES)
        if foreign:
            raise UserError(
                f"output folder {self.path} holds files that are not from a training run "
                f"({foreign[0]}, ...): choose an empty or new --output-dir"
            )
        if overwrite:
            return None
        if MANIFEST in entries:
            raise UserError(
                f"output folder {self.path} already holds a finished run: pass --overwrite to replace it, "
                "or choose another --output-dir"
            )
        checkpoint = self.last_checkpoint()
        if checkpoint and resume:
            return checkpoint
        if checkpoint:
            raise UserError(
                f"output folder {self.path} holds an unfinished run and runtime.resume is false: "
                "pass --overwrite to start again"
            )
        return None

    def clear(self) -> None:
        """With --overwrite, after every input was validated: remove only what a run writes."""
        for name in OWN_ENTRIES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # ------------------------------------------------------------------ writing

    def start(self, cfg: Config) -> None:
        """Create the folder and record the config the run uses."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / RESOLVED_CONFIG).write_text(to_yaml(cfg), encoding="utf-8")

    def finish(
        self, outcome, labels: list[str], metric: str, build_manifest: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model, labels, metrics and plots from a finished training (`training.TrainOutcome`), then the
        manifest, built and written last: a folder with a manifest holds every other artifact (and its
        timings cover the saving). Returns the metrics and the manifest."""
        from trainer import artifacts

        metrics = {"validation": outcome.val_report, "test": outcome.test_report}
        outcome.trainer.save_model(str(self.model_dir))
        self.write_labels(labels)
        write_json(self.path / METRICS, metrics)
        artifacts.plot_confusion_matrix(outcome.test_report, self.path / CONFUSION_MATRIX, "test split")
        artifacts.plot_learning_curve(outcome.log_history, metric, self.path / LEARNING_CURVE)
        manifest = build_manifest()
        self.write_manifest(manifest)
        return metrics, manifest

    def write_labels(self, labels: list[str]) -> None:
        write_json(self.path / LABELS, {"labels": labels, "label2id": {n: i for i, n in enumerate(labels)}})

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The "finished" marker: call it after every other artifact is in place."""
        write_json(self.path / MANIFEST, manifest)

    # ------------------------------------------------------------------ reading back

    def is_finished(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def _require_finished(self) -> None:
        if not self.path.is_dir():
            raise UserError(f"run folder {self.path} does not exist: train first, or fetch the run")
        if not self.is_finished():
            raise UserError(
                f"{self.path} is not a finished run (no {MANIFEST}): let the run finish, "
                "or rerun its command to resume it"
            )

    def _read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"run folder {self.path} has no {name}: it is incomplete, train again") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is unreadable ({exc}): the run folder is damaged, train again") from None

    def manifest(self) -> dict[str, Any]:
        self._require_finished()
        return self._read_json(MANIFEST)

    def metrics(self) -> dict[str, Any]:
        self._require_finished()
        return self._read_json(METRICS)

    def labels(self) -> list[str]:
        self._require_finished()
        data = self._read_json(LABELS)
        labels = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(labels, list) or not labels:
            raise UserError(f"{self.path / LABELS} lists no labels: the run folder is damaged, train again")
        return [str(label) for label in labels]

    def resolved_config(self) -> Config:
        """The config the run trained with (its model.max_length, labels columns, seed, ...)."""
        path = self.path / RESOLVED_CONFIG
        if not path.is_file():
            raise UserError(f"run folder {self.path} has no {RESOLVED_CONFIG}: it is incomplete, train again")
        return load_resolved(path)
