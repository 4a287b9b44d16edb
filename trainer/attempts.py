"""A run's attempts record, `<run>/attempts.json`: one record per start of the run (the first start and
every resume), so the manifest's timings, cost and resume points cover the whole run, every attempt.

    {"attempts": [{"started": ..., "last_seen": ..., "ended": ..., "resumed_from": "checkpoint-75",
                   "resumed_at_step": 75, "last_checkpoint_step": 150, "outcome": "finished"}, ...]}

Times are Unix times. `last_seen` moves at each checkpoint (`AttemptRecorder`), so an attempt killed
without a word still counts up to its last checkpoint. Where the file lives is the run folder's
(`RunFolder.attempts`); the bucket sync copies it beside each checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer import checkpoints
from trainer.run_state import FAILED, FINISHED, INTERRUPTED, RUNNING

log = logging.getLogger(__name__)

# An attempt's outcome is a run state (trainer/run_state.py reads it back for trainer-run and make runs).
OUTCOMES = (RUNNING, FINISHED, INTERRUPTED, FAILED)
TMP = ".tmp"


def write_json(path: Path, payload: Any) -> None:
    """Whole or not at all: written beside the target (`<name>.tmp`), then renamed over it."""
    tmp = path.with_suffix(path.suffix + TMP)
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Summary:
    """What the manifest says of the attempts: the whole run's wall time, this attempt's, the resumes."""

    count: int
    wall_seconds: float
    this_attempt_seconds: float
    resume_points: list[dict[str, Any]]


class Attempts:
    """The attempts record at `path`: read, begin, update and end the current (last) attempt."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Attempts({str(self.path)!r})"

    def records(self) -> list[dict[str, Any]]:
        """Every attempt so far, oldest first; [] when there is no readable record."""
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s is unreadable: the manifest counts this attempt only", self.path)
            return []
        return list(data.get("attempts", [])) if isinstance(data, dict) else []

    def _write(self, records: list[dict[str, Any]]) -> None:
        write_json(self.path, {"attempts": records})

    def begin(self, resume_from: Path | None, started: float) -> None:
        record = {
            "started": started,
            "last_seen": time.time(),
            "ended": None,
            "resumed_from": resume_from.name if resume_from else None,
            "resumed_at_step": checkpoints.step_of(resume_from) if resume_from else None,
            "last_checkpoint_step": None,
            "outcome": RUNNING,
        }
        self._write([*self.records(), record])

    def update(self, **fields: Any) -> None:
        """Update the current (last) attempt: `last_seen` is now; `fields` as given."""
        records = self.records()
        if not records:
            return
        records[-1].update({"last_seen": time.time(), **fields})
        self._write(records)

    def end(self, outcome: str) -> None:
        """Close the current attempt: finished, interrupted or failed. On a failing disk the record may
        not be writable: that is logged, and the attempt keeps its last checkpoint's time."""
        try:
            now = time.time()
            self.update(ended=now, last_seen=now, outcome=outcome)
        except OSError as exc:
            log.warning("could not record the end of this attempt in %s (%s)", self.path, exc)

    def summary(self) -> Summary:
        records = self.records()
        now = time.time()
        this = records[-1] if records else {"started": now, "last_seen": now}
        return Summary(
            count=len(records),
            wall_seconds=sum(a["last_seen"] - a["started"] for a in records),
            this_attempt_seconds=this["last_seen"] - this["started"],
            resume_points=[
                {"checkpoint": a["resumed_from"], "step": a["resumed_at_step"], "at": _iso(a["started"])}
                for a in records
                if a.get("resumed_from")
            ],
        )


class AttemptRecorder(TrainerCallback):
    """Each checkpoint moves the attempt's `last_seen` and `last_checkpoint_step`."""

    def __init__(self, attempts: Attempts):
        self.attempts = attempts

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.attempts.update(last_checkpoint_step=state.global_step)


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))
