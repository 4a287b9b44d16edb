"""Faults a run meets, for real: damaged checkpoints, two runs on one folder, a full disk, a read-only
folder. Each ends in exit 2 and one line, or in a run that carries on. (SIGTERM and kill -9 with the
exact resume after them: test_resume.py.)

The real-process tests start `python -m trainer` on the tiny model and kill it as the OOM killer
would. The disk tests mount a small tmpfs (root only: they skip outside CI and fail under
TRAINER_TESTS_STRICT=1 when not root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ROOT, logged_step, require, wait_for
from trainer import checkpoints
from trainer.cli import main


def trainer_cmd(config: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "--config", str(config), "--output-dir", str(out), *flags]


def start(config: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        trainer_cmd(config, out, *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )


def run_trainer(config: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    proc = start(config, out, *flags)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def error_line(stderr: str) -> str:
    """The one `trainer: error:` line of a failed run (and no traceback)."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("trainer: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), stderr[-3000:]
    return errors[0]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# ---------------------------------------------------------------------- damaged checkpoints (in process)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory, tiny_model_dir, tiny_csv) -> tuple[Path, list[str]]:
    """A finished 2-epoch run (checkpoints 15 and 30) and the flags that made it."""
    out = tmp_path_factory.mktemp("damaged") / "base"
    flags = [
        "--output-dir", str(out), "--epochs", "2", "--batch-size", "16",
        "--set", f"model.name={tiny_model_dir}", "--set", "model.max_length=32",
        "--set", f"data.path={tiny_csv}", "--set", "train.save_total_limit=3",
    ]  # fmt: skip
    assert main(flags) == 0
    return out, flags


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    # what a kill -9 (or an OOM, a preemption) during the save leaves: every file but the marker
    "killed-during-save": (lambda c: (c / checkpoints.MARKER).unlink(), "no completion marker"),
    "optimizer-missing": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "weights-truncated": (lambda c: _truncate(c / "model.safetensors"), "model.safetensors has"),
    "state-truncated": (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json has"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_last_checkpoint_is_skipped_and_the_one_before_resumed(tmp_path, two_epoch_run, case):
    base, flags = two_epoch_run
    out = tmp_path / "run"
    shutil.copytree(base, out)
    (out / "manifest.json").unlink()  # an unfinished run
    damage, why = DAMAGE[case]
    damage(out / "checkpoints" / "checkpoint-30")
    assert not checkpoints.is_complete(out / "checkpoints" / "checkpoint-30")
    flags = [str(out) if f == str(base) else f for f in flags]
    assert main(flags) == 0
    assert manifest(out)["training"]["resumed_from"].endswith("checkpoint-15")
    assert manifest(out)["training"]["global_steps"] == 30
    skipped = [line for line in (out / "training.log").read_text().splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "skipping checkpoint-30: " in skipped[0] and why in skipped[0], skipped
    assert checkpoints.is_complete(out / "checkpoints" / "checkpoint-30")  # saved again, whole


def test_only_incomplete_checkpoints_start_the_run_afresh(tmp_path, two_epoch_run):
    base, flags = two_epoch_run
    out = tmp_path / "run"
    shutil.copytree(base, out)
    (out / "manifest.json").unlink()
    for step in (15, 30):
        (out / "checkpoints" / f"checkpoint-{step}" / checkpoints.MARKER).unlink()
    assert main([str(out) if f == str(base) else f for f in flags]) == 0
    assert manifest(out)["training"]["resumed_from"] is None
    assert manifest(out)["training"]["global_steps"] == 30


# ---------------------------------------------------------------------- one folder, one run (real processes)


@pytest.fixture
def long_config(tmp_path, tiny_config_file) -> Path:
    """The tiny config with 4-row batches (60 steps an epoch) and a log line every step."""
    text = tiny_config_file.read_text()
    text = text.replace("batch_size: 16", "batch_size: 4").replace("logging_steps: 5", "logging_steps: 1")
    path = tmp_path / "long.yaml"
    path.write_text(text)
    return path


STEPS_PER_EPOCH = 240 // 4


@pytest.mark.slow
def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, long_config):
    out = tmp_path / "run"
    out.mkdir()  # an existing folder is locked at once
    first = start(long_config, out, "--epochs", "40", "--no-early-stopping")
    try:
        wait_for(lambda: logged_step(out, 5), what="the first run's step 5")
        second = run_trainer(long_config, out)
        assert second.returncode == 2
        assert error_line(second.stderr) == (
            f"trainer: error: output folder {out} is in use by another training run: wait for it to end "
            "(or stop it), or choose another --output-dir"
        )
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()  # kill -9: the kernel drops its lock
        first.communicate(timeout=60)
    third = run_trainer(long_config, out, "--epochs", "1", "--overwrite")
    assert third.returncode == 0, third.stderr[-3000:]
    assert manifest(out)["training"]["global_steps"] == STEPS_PER_EPOCH


# ---------------------------------------------------------------------- full disk, read-only folder


@contextmanager
def tmpfs(where: Path, options: str):
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def entries(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.slow
def test_no_room_for_a_checkpoint_is_found_before_the_first_step(tmp_path, tiny_config_file):
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        (disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 128 * 1024))  # 128 KB left
        res = run_trainer(tiny_config_file, disk / "run")
        assert res.returncode == 2
        line = error_line(res.stderr)
        assert line.startswith(f"trainer: error: not enough free space for a checkpoint in {disk / 'run'}: ")
        assert "one needs about 0.3 MB" in line and "has 0.1 MB free" in line, line
        assert entries(disk) == ["filler"], "nothing written"


@pytest.mark.slow
def test_a_disk_that_fills_during_training_stops_in_one_line_and_the_rerun_resumes(
    tmp_path, tiny_config_file
):
    """Room for the first checkpoint (the preflight passes), not for the second: the save of
    checkpoint-30 fails half-way. After space is freed, the rerun skips it and resumes from 15."""
    with tmpfs(tmp_path / "disk", "size=640k") as disk:
        out = disk / "run"
        res = run_trainer(tiny_config_file, out, "--no-early-stopping")
        assert res.returncode == 2, res.stderr[-3000:]
        line = error_line(res.stderr)
        assert line.startswith(
            f"trainer: error: the disk holding {out} ran out of space while the run wrote"
        ), line
        assert "rerun the same command to resume" in line
        found = checkpoints.scan(out / "checkpoints")
        assert found.newest.name == "checkpoint-15" and [f.name for f, _ in found.skipped] == [
            "checkpoint-30"
        ]
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        res = run_trainer(tiny_config_file, out, "--no-early-stopping")
        assert res.returncode == 0, res.stderr[-3000:]
        assert manifest(out)["training"]["resumed_from"].endswith("checkpoint-15")
        assert "skipping checkpoint-30: no completion marker" in (out / "training.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["the-folder-itself", "a-folder-inside"])
def test_a_read_only_output_folder_is_one_line_and_nothing_is_written(tmp_path, tiny_config_file, where):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        out = ro if where == "the-folder-itself" else ro / "run"
        res = run_trainer(tiny_config_file, out)
        assert res.returncode == 2
        line = error_line(res.stderr)
        if out == ro:
            expected = f"trainer: error: output folder {out} is not writable (Read-only file system): "
        else:
            expected = f"trainer: error: cannot create output folder {out}: {ro} is not a writable folder; "
        assert line.startswith(expected), line
        assert entries(ro) == []


# ---------------------------------------------------------------------- kill -9 in the middle of a save


@pytest.mark.slow
def test_kill_9_during_a_save_leaves_an_invisible_checkpoint(tmp_path, tiny_csv):
    """For real: MiniLM-L6 (the local default, 22M parameters: a 270 MB checkpoint that takes a while to
    write and flush) is killed as soon as its first checkpoint's folder appears. The rerun skips that
    folder in one line and trains from the start."""
    out = tmp_path / "run"
    flags = [
        "--set", f"data.path={tiny_csv}", "--set", "data.max_rows=null", "--epochs", "1",
        "--batch-size", "16", "--set", "train.eval_batch_size=64",
    ]  # fmt: skip
    config = ROOT / "config" / "local.yaml"
    proc = start(config, out, *flags)
    checkpoint = out / "checkpoints" / "checkpoint-15"
    wait_for(checkpoint.is_dir, what="the first save")
    proc.kill()
    proc.communicate(timeout=60)
    assert checkpoint.is_dir() and not (checkpoint / checkpoints.MARKER).exists(), "killed mid-save"
    assert checkpoints.scan(out / "checkpoints").newest is None

    res = run_trainer(config, out, *flags)
    assert res.returncode == 0, res.stderr[-3000:]
    skipped = [line for line in res.stderr.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "skipping checkpoint-15: no completion marker" in skipped[0], skipped
    assert manifest(out)["training"]["resumed_from"] is None
    assert checkpoints.is_complete(checkpoint)
