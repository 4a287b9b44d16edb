"""Checkpoints are complete or invisible.

The HF Trainer writes `checkpoints/checkpoint-<step>/` file by file; a process killed (kill -9, an OOM, a
preemption, a full disk) in the middle leaves a folder that looks like a checkpoint and cannot be resumed
from. So a checkpoint counts only when it holds a completion marker, `checkpoint-complete.json`, written
last (after every file of the save is flushed to disk) and listing each file with its size; and when what
the marker lists is still there, whole: the sizes match, `model.safetensors` has a readable header and
`trainer_state.json` parses.

    MARKER                         the marker's file name (the bucket sync uploads it last)
    problem(folder)                why a folder is not a complete checkpoint, or None
    is_complete(folder)            problem(folder) is None
    scan(checkpoints_dir)          the newest complete checkpoint, and every newer or broken one skipped
    mark_complete(folder)          write the marker (CompletionMarkerCallback does it after each save)
    estimated_bytes(model, tok)    what one checkpoint of this model takes on disk
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

log = logging.getLogger(__name__)

MARKER = "checkpoint-complete.json"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
# What a resume reads besides the weights (transformers.trainer's OPTIMIZER_NAME, SCHEDULER_NAME).
REQUIRED = (TRAINER_STATE, "optimizer.pt", "scheduler.pt")
_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def step_of(folder: Path) -> int | None:
    """The step of a `checkpoint-<step>` folder name, None for any other name."""
    match = _NAME.match(folder.name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------- writing the marker


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_complete(folder: Path) -> None:
    """Flush every file of the checkpoint to disk, then write the marker (atomically) listing them with
    their sizes: a power-off after this leaves a whole checkpoint, one before it leaves an invisible one."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    step = step_of(folder)
    payload = json.dumps({"step": step, "files": files}, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".marker-")
    os.fchmod(fd, 0o644)  # as the Trainer's own files (mkstemp makes 0600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, folder / MARKER)
    _fsync(folder)


class CompletionMarkerCallback(TrainerCallback):
    """After each checkpoint save, mark it complete. It must come before any callback that ships the
    checkpoint elsewhere (the bucket sync), so that the marker exists when they run."""

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            # Every process saves its own RNG state into the checkpoint, with no barrier after it:
            # the marker waits for all of them.
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero:
            mark_complete(folder)
        elif args.save_on_each_node and state.is_local_process_zero:
            # Several machines keep the checkpoint on each one's disk (save_on_each_node): each machine's
            # main process completes and marks its own copy.
            _write_weights(folder, kwargs["model"])
            mark_complete(folder)


def _write_weights(folder: Path, model) -> None:
    """The weights and model config into a checkpoint on a machine other than the main one: transformers
    5 writes them on global rank 0 only (PreTrainedModel.should_save_on_this_rank), whatever
    save_on_each_node says, while the Trainer writes the rest (optimizer, scheduler, state) there."""
    from safetensors.torch import save_model

    if not (folder / WEIGHTS).exists():
        save_model(model, str(folder / WEIGHTS), metadata={"format": "pt"})
        model.config.save_pretrained(folder)


# ---------------------------------------------------------------------- reading it back


def read_marker(folder: Path) -> dict[str, int]:
    """The files the marker lists, with their sizes (raises OSError or ValueError when unreadable)."""
    data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError("no file list")
    return {str(k): int(v) for k, v in files.items()}


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file starts with an 8-byte header length and a JSON header whose tensors end
    within the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name} is truncated"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return f"{path.name} has an unreadable header"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if 8 + length + max(ends, default=0) > size:
        return f"{path.name} is truncated"
    return None


def problem(folder: Path) -> str | None:
    """Why `folder` is not a checkpoint a run can resume from, in a few words; None when it is one."""
    if not (folder / MARKER).is_file():
        return "no completion marker (cut off while being written)"
    try:
        files = read_marker(folder)
    except (OSError, ValueError) as exc:
        return f"its {MARKER} is unreadable ({exc})"
    missing = [name for name in (*REQUIRED, WEIGHTS) if name not in files]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    try:
        json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{TRAINER_STATE} does not parse"
    return _safetensors_problem(folder / WEIGHTS)


def is_complete(folder: str | Path) -> bool:
    """Whether a run can resume from `folder` (for the bucket sync: upload only complete checkpoints)."""
    return problem(Path(folder)) is None


@dataclass
class Scan:
    """What a checkpoints folder holds: the newest complete checkpoint and the folders passed over."""

    newest: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    "(folder, why) for every checkpoint that is not complete"


def scan(checkpoints_dir: Path) -> Scan:
    """The newest complete checkpoint; every incomplete checkpoint folder, newer or older, with why."""
    out = Scan()
    if not checkpoints_dir.is_dir():
        return out
    folders = sorted(
        (p for p in checkpoints_dir.iterdir() if p.is_dir() and step_of(p) is not None),
        key=step_of,
        reverse=True,
    )
    for folder in folders:
        why = problem(folder)
        if why:
            out.skipped.append((folder, why))
        elif out.newest is None:
            out.newest = folder
    return out


# ---------------------------------------------------------------------- size on disk


def estimated_bytes(model, tokenizer) -> int:
    """One checkpoint: fp32 weights plus AdamW's two fp32 moments (3 x 4 bytes a parameter), plus the
    tokenizer files (saved to a scratch folder outside the run to measure them)."""
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        tok = sum(p.stat().st_size for p in Path(scratch).rglob("*") if p.is_file())
    return 12 * params + tok
