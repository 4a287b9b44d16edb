"""A run's state from its folder: one reader for the VM's run manager and the laptop's `make runs`.

    running      the run's lock is held or its container runs (only the run manager can tell)
    finished     manifest.json is there (the trainer writes it last)
    failed       the last attempt ended in an error (attempts.json), or it stopped before its first step
    interrupted  the last attempt was cut off (a stop, a preemption, a power-off): resuming goes on
    unknown      nothing recorded yet

A study of `make tune` (runs/<study>/study.json, trainer/tune.py) reads the same way: its `state` finished or
failed as written, interrupted when it says running (or interrupted) and no process holds it.

Standard library only, and runnable as a file: the VM's run manager (trainer-run, on the host, outside the
image) calls `python3 .../trainer/run_state.py state RUN_FOLDER`, `... name NAME` and `... manifests RUNS_DIR
NAME...` (the manifests of finished runs on the VM's disk, for the laptop's `make runs`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MANIFEST = "manifest.json"  # written last: the "finished" marker
ATTEMPTS = "attempts.json"
STUDY = "study.json"  # a study's folder: its state, trials and best value (trainer/tune.py)
RUNNING, FINISHED, FAILED, INTERRUPTED, UNKNOWN = STATES = (
    "running",
    "finished",
    "failed",
    "interrupted",
    "unknown",
)
# A run's name: it becomes a folder, a bucket prefix, a systemd instance and a container name.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RUN_NAME_RULE = "letters, digits, '.', '_' and '-' only, a letter or digit first"


def valid_name(name: str) -> bool:
    return bool(RUN_NAME.fullmatch(name)) and len(name) <= 200


def recorded(manifest: dict | None, attempts: dict | None) -> str:
    """The state the trainer's records say: finished, failed, interrupted, or unknown (no attempt)."""
    if manifest is not None:
        return FINISHED
    tries = (attempts or {}).get("attempts") if isinstance(attempts, dict) else None
    outcome = (
        tries[-1].get("outcome")
        if isinstance(tries, list) and tries and isinstance(tries[-1], dict)
        else None
    )
    if outcome in (FINISHED, FAILED):
        return outcome
    # "running" with no process left: killed without a word (a power-off): as interrupted.
    return INTERRUPTED if outcome else UNKNOWN


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else {}


def folder_state(run_dir: Path) -> str:
    manifest = _json(run_dir / MANIFEST) if (run_dir / MANIFEST).is_file() else None
    if manifest is None and (run_dir / STUDY).is_file():
        return study_state(_json(run_dir / STUDY))
    return recorded(manifest, _json(run_dir / ATTEMPTS))


def study_state(study: dict | None) -> str:
    said = (study or {}).get("state")
    if said in (FINISHED, FAILED):
        return said
    return INTERRUPTED if said in (RUNNING, INTERRUPTED) else UNKNOWN


def state_of(record: dict) -> str:
    """The state a finished-looking record says: a run's manifest is finished; a study's says its own."""
    return study_state(record) if record.get("kind") == "study" else FINISHED


def record(run_dir: Path) -> dict | None:
    """What `make runs` reads of a finished run: its manifest, or a study's study.json."""
    for name in (MANIFEST, STUDY):
        value = _json(run_dir / name) if (run_dir / name).is_file() else None
        if value:
            return value
    return None


def cost(manifest: dict | None) -> str:
    """The manifest's cost estimate in USD, '-' where there is none."""
    value = manifest.get("estimated_cost_usd") if isinstance(manifest, dict) else None
    return "-" if value is None else str(value)


def manifests(runs_dir: Path, names: list[str]) -> dict[str, dict]:
    """{run: manifest} of the named runs in runs_dir whose manifest (a study's study.json) reads as a JSON
    object."""
    found = {}
    for name in names:
        manifest = record(runs_dir / name) if valid_name(name) else None
        if manifest:
            found[name] = manifest
    return found


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "state":
        print(folder_state(Path(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "cost":
        print(cost(record(Path(argv[1]))))
        return 0
    if len(argv) >= 2 and argv[0] == "manifests":
        print(json.dumps(manifests(Path(argv[1]), argv[2:]), sort_keys=True))
        return 0
    if len(argv) == 2 and argv[0] == "name":
        if valid_name(argv[1]):
            return 0
        print(f"run name {argv[1]!r}: {RUN_NAME_RULE}", file=sys.stderr)
        return 2
    usage = "usage: run_state.py state|cost RUN_FOLDER | name NAME | manifests RUNS_DIR NAME..."
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
