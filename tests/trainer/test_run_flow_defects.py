"""Two defects of the run's flow, as a user meets them: an output folder given with `~`, and a batch larger
than the training split."""

from __future__ import annotations

import json
import os

import pytest

from trainer.cli import main

TRAIN_ROWS = 240  # the tiny CSV's 300 rows, split 80/10/10


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# ---------------------------------------------------------------------- `~` in the output folder


@pytest.mark.parametrize("given", ["~/runs/x", "$RUNS_HOME/x"])
def test_a_tilde_or_variable_output_dir_is_one_folder_for_the_run_and_its_checkpoints(
    tmp_path, tiny_config_file, monkeypatch, given
):
    """`--output-dir ~/runs/x`: the run folder, its checkpoints, the lock and the resume are all under
    $HOME/runs/x (the folder used to be ./~/runs/x while the Trainer wrote checkpoints to $HOME/runs/x, so
    a rerun after a kill -9 found no checkpoint and started afresh)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RUNS_HOME", str(home / "runs"))
    monkeypatch.chdir(cwd)
    flags = ["--config", str(tiny_config_file), "--epochs", "1", "--output-dir", given]
    assert main(flags) == 0
    run = home / "runs" / "x"
    assert manifest(run)["run_name"] == "x"
    assert (run / "training.log").is_file() and (run / "model" / "model.safetensors").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir()], "the checkpoints are in the run folder"
    assert list(cwd.iterdir()) == [], "nothing is written under ./~ or ./$RUNS_HOME"
    # The same command again sees the same, finished folder: refused without --overwrite, replaced with it.
    assert main(flags) == 2
    assert main([*flags, "--overwrite"]) == 0
    assert list(cwd.iterdir()) == []


def test_a_resume_from_a_tilde_output_dir_finds_the_checkpoints(tmp_path, tiny_config_file, monkeypatch):
    """An unfinished run under `~` (a kill -9 after a checkpoint: no manifest) resumes from its checkpoint."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    flags = ["--config", str(tiny_config_file), "--output-dir", "~/x"]
    assert main([*flags, "--epochs", "1"]) == 0
    run = home / "x"
    (run / "manifest.json").unlink()  # as a run killed after its last checkpoint leaves the folder
    assert main([*flags, "--epochs", "2"]) == 0
    assert manifest(run)["training"]["resumed_from"] == str(run / "checkpoints" / "checkpoint-15")
    assert list(cwd.iterdir()) == []


# ---------------------------------------------------------------------- a batch larger than the split


def test_the_batch_used_is_capped_at_the_training_split():
    """batch_size x gradient_accumulation_steps x processes, capped at the training split; so is what one
    process loads per forward pass and how many passes a step accumulates."""
    from trainer.config import TrainConfig
    from trainer.training import BatchUse

    def use(world_size: int, rows: int, **train):
        b = BatchUse.of(TrainConfig(**train), world_size, rows)
        return b.configured, b.used, b.device_batch, b.accumulated

    assert use(2, 240, batch_size=16, gradient_accumulation_steps=2) == (64, 64, 16, 2)
    assert use(1, 1600, batch_size=100_000) == (100_000, 1600, 1600, 1)
    assert use(1, 1600, batch_size=500, gradient_accumulation_steps=8) == (4000, 1600, 500, 4)
    assert use(2, 1600, batch_size=1000) == (2000, 1600, 800, 1)
    # batching split: 8-text micro-batches, accumulated into the batch
    assert use(1, 1600, batch_size=4096, batching="split") == (4096, 1600, 8, 200)
    assert BatchUse.of(TrainConfig(batch_size=16), 1, 240).warning() is None
    assert BatchUse.of(TrainConfig(batch_size=240), 1, 240).warning() is None
    said = BatchUse.of(TrainConfig(batch_size=100_000), 1, 1600).warning()
    assert said == (
        "the effective batch (100000 train.batch_size x 1 gradient_accumulation_steps x 1 process = 100000) "
        "is larger than the training split (1600 rows): each epoch is one optimizer step over the whole "
        "split, and the manifest records a batch of 1600; lower --batch-size (train.batch_size) to 800 or "
        "less for two or more steps per epoch"
    )


def test_a_batch_larger_than_the_training_split_is_said_and_the_manifest_records_the_real_one(
    tmp_path, tiny_config_file, capsys
):
    out = tmp_path / "big-batch"
    flags = ["--config", str(tiny_config_file), "--epochs", "1", "--batch-size", "100000"]
    assert main([*flags, "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if "larger than the training split" in line]
    assert len(warnings) == 1, "said once"
    assert f"{TRAIN_ROWS} rows" in warnings[0] and "100000" in warnings[0] and "--batch-size" in warnings[0]
    assert "larger than the training split" in (out / "training.log").read_text()
    training = manifest(out)["training"]
    assert training["effective_batch_size"] == TRAIN_ROWS
    assert training["configured_effective_batch_size"] == 100_000
    assert training["device_batch_size"] == TRAIN_ROWS
    assert training["global_steps"] == 1


def test_a_batch_within_the_split_says_nothing(tmp_path, tiny_config_file, capsys):
    flags = ["--config", str(tiny_config_file), "--epochs", "1", "--output-dir", str(tmp_path / "r")]
    assert main(flags) == 0
    assert "larger than the training split" not in capsys.readouterr().err
    training = manifest(tmp_path / "r")["training"]
    assert training["effective_batch_size"] == training["configured_effective_batch_size"] == 16
    assert os.path.isdir(tmp_path / "r" / "checkpoints")
