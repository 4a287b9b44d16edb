"""The run folder: the one owner of its layout, of writing it and of reading it back.

    <run>/
      model/                 model + tokenizer (safetensors), written by the HF Trainer's save_model
      labels.json            {"labels": [...], "label2id": {...}}
      metrics.json           {"validation": report, "test": report}
      config.resolved.yaml   the run's config (file < cloud_overrides < flags), written at the start
      training.log           the run's log
      checkpoints/           the Trainer's checkpoints (resume; complete ones hold checkpoint-complete.json)
      attempts.json          one record per start of the run (first start and every resume): times, steps
      tensorboard/           TensorBoard event files
      confusion_matrix.png   test split
      learning_curve.png     losses and the early-stopping metric
      manifest.json          written last: its presence marks the run finished; `make export` adds
                             its "exports" entry (one record per format, the default marked)
      export/<format>/       what `make export` wrote: model-int8.pt or model.onnx (trainer.inference)

`trainer.run` writes a run through `RunFolder`, `trainer.predict` reads one back through it, and so do
the cloud verbs (`make fetch`, `make runs`): `RunFolder(path).is_finished()`, `.manifest()`,
`.resolved_config()`. No other module spells a file name of the run folder (inside a checkpoint,
`trainer.checkpoints` owns the names; the attempts record's content is `trainer.attempts`'s). The run holds
an OS lock on the folder (`trainer.lock`) while it writes there.

A folder given as `~/runs/x` or `$RUNS/x` is expanded once, when the `RunFolder` is made: the lock, the
guard, the resume and the Trainer's checkpoints (`checkpoints_dir`) all name the same folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainer import checkpoints
from trainer.attempts import TMP, Attempts, write_json
from trainer.config import Config, load_resolved, to_yaml
from trainer.errors import UserError
from trainer.run_state import ATTEMPTS, MANIFEST  # the two records a run's state is read from

log = logging.getLogger(__name__)

MODEL = "model"
LABELS = "labels.json"
METRICS = "metrics.json"
RESOLVED_CONFIG = "config.resolved.yaml"
LOG = "training.log"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
CONFUSION_MATRIX = "confusion_matrix.png"
LEARNING_CURVE = "learning_curve.png"
EXPORT = "export"
EXPORTS_KEY = "exports"
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
        ATTEMPTS,
        EXPORT,
    }
)
MB = 1024 * 1024
WRITE_PROBE = ".write-check-"


def is_own(name: str) -> bool:
    """An entry a run of ours leaves, with what a run killed at the wrong moment may leave: a half-written
    `write_json` file, the write check's probe."""
    return (
        name in OWN_ENTRIES
        or (name.endswith(TMP) and name[: -len(TMP)] in OWN_ENTRIES)
        or name.startswith(WRITE_PROBE)
    )


class RunFolder:
    """One run's folder: where each artifact lives, the guard before a run writes, and the reading back."""

    def __init__(self, path: str | Path):
        self.path = Path(os.path.expandvars(os.path.expanduser(path)))

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

    def export_dir(self, fmt: str) -> Path:
        """Where `make export` puts format `fmt` (trainer.inference names the file inside)."""
        return self.path / EXPORT / fmt

    @property
    def attempts(self) -> Attempts:
        """The run's attempts record (`trainer.attempts`): one record per start of the run."""
        return Attempts(self.path / ATTEMPTS)

    # ------------------------------------------------------------------ the guard, before a run writes

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint (`trainer.checkpoints`), None when there is none."""
        newest = checkpoints.scan(self.checkpoints_dir).newest
        return str(newest) if newest else None

    def guard(self, overwrite: bool, resume: bool) -> checkpoints.Scan:
        """Decide what to do with the folder before anything is written: the checkpoint to resume from
        (`.newest`, None to start afresh) and the incomplete ones to remove (`.skipped`). Raises UserError
        rather than touching a finished or foreign folder."""
        fresh = checkpoints.Scan()
        if not self.path.exists():
            return fresh
        if not self.path.is_dir():
            raise UserError(f"output folder {self.path} is a file: choose another --output-dir")
        entries = {p.name for p in self.path.iterdir()}
        if not entries:
            return fresh
        foreign = sorted(name for name in entries if not is_own(name))
        if foreign:
            raise UserError(
                f"output folder {self.path} holds files that are not from a training run "
                f"({foreign[0]}, ...): choose an empty or new --output-dir"
            )
        if overwrite:
            return fresh
        if MANIFEST in entries:
            raise UserError(
                f"output folder {self.path} already holds a finished run: pass --overwrite to replace it, "
                "or choose another --output-dir"
            )
        found = checkpoints.scan(self.checkpoints_dir)
        if found.newest and not resume:
            raise UserError(
                f"output folder {self.path} holds an unfinished run and runtime.resume is false: "
                "pass --overwrite to start again"
            )
        return found

    def check_writable(self) -> None:
        """Before anything is written: the folder (or, before it exists, the folder that will hold it)
        takes new files. A probe file in an existing folder, removed at once, asks the file system itself
        (permissions, a read-only mount, root included)."""
        if self.path.is_dir():
            try:
                fd, probe = tempfile.mkstemp(dir=self.path, prefix=WRITE_PROBE)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise UserError(
                    f"output folder {self.path} is not writable ({exc.strerror}): make it writable "
                    "or choose another --output-dir"
                ) from None
            return
        parent = _existing_ancestor(self.path)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK, effective_ids=True):
            raise UserError(
                f"cannot create output folder {self.path}: {parent} is not a writable folder; "
                "choose another --output-dir"
            )

    def check_room(self, needed: int) -> None:
        """Before the first step: the disk holding the folder has room for one checkpoint of `needed`
        bytes (`checkpoints.estimated_bytes`), not discovered at the first save after an epoch."""
        where = _existing_ancestor(self.path)
        free = shutil.disk_usage(where).free
        if free < needed:
            raise UserError(
                f"not enough free space for a checkpoint in {self.path}: one needs about "
                f"{needed / MB:.1f} MB, the disk holding {where} has {free / MB:.1f} MB free; "
                "free some space or choose another --output-dir"
            )

    def disk_full_error(self, needed: int) -> UserError | None:
        """After a failed write: a UserError saying the disk is full, when it is (under the room for one
        more checkpoint), else None."""
        free = shutil.disk_usage(_existing_ancestor(self.path)).free
        if free >= needed:
            return None
        return UserError(
            f"the disk holding {self.path} ran out of space while the run wrote there ({free / MB:.1f} MB "
            f"free, a checkpoint needs about {needed / MB:.1f} MB): free some space, then rerun the same "
            "command to resume from the last complete checkpoint"
        )

    def remove_incomplete(self, found: checkpoints.Scan) -> None:
        """Under the run's lock, before training: incomplete checkpoints go (the Trainer's rotation would
        count them), each with one line saying which and why."""
        for folder, why in found.skipped:
            log.warning("skipping %s: %s; removed it", folder.name, why)
            shutil.rmtree(folder)

    def clear(self) -> None:
        """With --overwrite, after every input was validated: remove only what a run writes."""
        for target in self.path.iterdir():
            if not is_own(target.name):
                continue
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()

    # ------------------------------------------------------------------ writing

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create output folder {self.path} ({exc.strerror}): choose another --output-dir"
            ) from None

    def start(self, cfg: Config) -> None:
        """Create the folder and record the config the run uses (a run folder made without a run)."""
        self.create()
        self.write_config(cfg)

    def write_config(self, cfg: Config) -> None:
        """The config the run uses, written at its start (`resolved_config` reads it back)."""
        (self.path / RESOLVED_CONFIG).write_text(to_yaml(cfg), encoding="utf-8")

    def write_results(self, outcome, labels: list[str], metric: str) -> dict[str, Any]:
        """Model, labels, metrics and plots from a finished training (`training.TrainOutcome`); the
        manifest comes after them (`write_manifest`). Returns the metrics."""
        from trainer import artifacts

        metrics = {"validation": outcome.val_report, "test": outcome.test_report}
        outcome.trainer.save_model(str(self.model_dir))
        self.write_labels(labels)
        write_json(self.path / METRICS, metrics)
        artifacts.plot_confusion_matrix(outcome.test_report, self.path / CONFUSION_MATRIX, "test split")
        artifacts.plot_learning_curve(outcome.log_history, metric, self.path / LEARNING_CURVE)
        return metrics

    def write_labels(self, labels: list[str]) -> None:
        write_json(self.path / LABELS, {"labels": labels, "label2id": {n: i for i, n in enumerate(labels)}})

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The "finished" marker: call it after every other artifact is in place."""
        write_json(self.path / MANIFEST, manifest)

    def record_export(self, fmt: str, entry: dict[str, Any]) -> None:
        """Add (or replace) format `fmt`'s record in the manifest's "exports" entry, after its files are in
        place; a record with `"default": true` takes that mark from every other. The manifest is rewritten
        whole or not at all (write_json), so the run stays finished whatever happens."""
        manifest = self.manifest()
        exports = dict(manifest.get(EXPORTS_KEY) or {})
        if entry.get("default"):
            exports = {name: {**old, "default": False} for name, old in exports.items()}
        exports[fmt] = entry
        write_json(self.path / MANIFEST, {**manifest, EXPORTS_KEY: exports})

    def exports(self) -> dict[str, dict[str, Any]]:
        """The manifest's export records by format ({} for a run never exported)."""
        exports = self.manifest().get(EXPORTS_KEY) or {}
        return exports if isinstance(exports, dict) else {}

    def export_to_use(self, fmt: str | None) -> tuple[str, Path | None]:
        """(format, its file) to predict with: `fmt` when given (its export must exist, pytorch needs
        none), else the export recorded as the default, else pytorch (the run's own model/)."""
        from trainer import inference

        exports = self.exports()
        if fmt is None:
            fmt = next((name for name, e in exports.items() if e.get("default")), inference.PYTORCH)
        if fmt == inference.PYTORCH:
            return fmt, None
        path = self.export_dir(fmt) / inference.FILES[fmt]
        if fmt not in exports or not path.is_file():
            missing = "no export record" if fmt not in exports else f"no {path}"
            raise UserError(
                f"{self.path} has no {fmt} export ({missing}): run make export RUN={self.path} FORMAT={fmt}, "
                "or pass --format pytorch"
            )
        return fmt, path

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


def _existing_ancestor(path: Path) -> Path:
    """`path` itself when it exists, else its nearest existing parent."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
