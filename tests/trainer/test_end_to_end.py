"""End to end on a tiny model and a few hundred rows: what a user sees after `python -m trainer`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.support import ROOT
from trainer.cli import main
from trainer.precision import decide_precision, detect_device
from trainer.predict import Predictor

ARTIFACTS = [
    "model/model.safetensors",
    "model/config.json",
    "model/tokenizer.json",
    "labels.json",
    "metrics.json",
    "manifest.json",
    "config.resolved.yaml",
    "training.log",
    "confusion_matrix.png",
    "learning_curve.png",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, tiny_csv):
    out = tmp_path_factory.mktemp("e2e") / "run"
    # 8 epochs without early stopping: the tiny task is learnt to F1 1.0 for every seed tried (42, 1, 2, 3).
    flags = (
        f"--config {ROOT / 'config/local.yaml'} --output-dir {out} --epochs 8 --batch-size 16 "
        f"--learning-rate 0.005 --no-early-stopping --set model.name={tiny_model_dir} "
        f"--set data.path={tiny_csv} --set data.max_rows=null --set model.max_length=32 "
        "--set train.logging_steps=5"
    )
    assert main(shlex.split(flags)) == 0
    return out


def test_artifacts_exist_and_parse(finished_run):
    for name in ARTIFACTS:
        assert (finished_run / name).is_file(), name
    assert (finished_run / "model/model.safetensors").stat().st_size > 1000
    assert list((finished_run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((finished_run / "labels.json").read_text())["labels"] == [
        "negative",
        "neutral",
        "positive",
    ]
    resolved = yaml.safe_load((finished_run / "config.resolved.yaml").read_text())
    assert resolved["train"]["epochs"] == 8.0 and resolved["mode"] == "local"
    log = (finished_run / "training.log").read_text()
    assert "eval_f1_macro" in log and "test: macro-F1" in log
    for png in ("confusion_matrix.png", "learning_curve.png"):
        assert (finished_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_are_complete_and_in_range(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert set(metrics) == {"validation", "test"}
    for split, report in metrics.items():
        for key in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "roc_auc"):
            assert 0.0 <= report[key] <= 1.0, (split, key)
        assert set(report["per_class_f1"]) == {"negative", "neutral", "positive"}
        matrix = report["confusion_matrix"]["matrix"]
        assert sum(map(sum, matrix)) == report["num_examples"] == 30
        assert "macro avg" in report["classification_report"]
    # The tiny task is learnable: a trained model beats chance (1/3) clearly.
    assert metrics["test"]["f1_macro"] > 0.6


def test_manifest_records_the_run(finished_run):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["precision"] == decide_precision("auto", detect_device()).precision  # fp32, bf16 with AMX
    assert manifest["environment"]["device"] == "cpu"
    assert manifest["training"]["batching"] == "packed"  # the default, and the tiny DistilBERT packs
    assert manifest["environment"]["in_container"] is False
    assert manifest["environment"]["spot"] is None  # not a cloud VM: no TRAINER_SPOT
    assert manifest["data"]["rows"] == {"train": 240, "val": 30, "test": 30}
    source = manifest["data"]["sources"][0]
    assert len(source["sha256"]) == 64 and source["rows"] == 300
    assert manifest["versions"]["transformers"].startswith("5.")
    assert manifest["timing"]["train_samples_per_second"] > 0
    assert manifest["timing"]["wall_seconds"] > 0
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) == 40


def test_saved_model_reloads_and_predicts(finished_run):
    predictor = Predictor.load(finished_run)
    rows = predictor.predict(["i love this wonderful great day", "awful terrible worst hate"])
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert abs(sum(rows[0]["scores"].values()) - 1.0) < 1e-4


def test_finished_run_is_not_overwritten_without_flag(finished_run, tiny_model_dir, tiny_csv, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    code = main(
        [
            "--output-dir",
            str(finished_run),
            "--set",
            f"model.name={tiny_model_dir}",
            "--set",
            f"data.path={tiny_csv}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def run_process(launcher: list[str], config, out) -> subprocess.CompletedProcess:
    """The trainer as a user starts it: a real process, offline, one epoch of the tiny config."""
    return subprocess.run(
        [*launcher, "--config", str(config), "--epochs", "1", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_python_dash_m_trainer_cli(tmp_path, tiny_config_file):
    res = run_process([sys.executable, "-m", "trainer"], tiny_config_file, tmp_path / "cli-run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "test macro-F1" in res.stdout and str(tmp_path / "cli-run") in res.stdout
    assert (tmp_path / "cli-run" / "manifest.json").is_file()


@pytest.mark.slow
def test_accelerate_launch_cpu(tmp_path, tiny_config_file):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    launcher = [
        accelerate,
        "launch",
        "--cpu",
        "--config_file",
        str(ROOT / "config/accelerate/cpu.yaml"),
        "-m",
        "trainer",
    ]
    res = run_process(launcher, tiny_config_file, tmp_path / "acc-run")
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((tmp_path / "acc-run" / "manifest.json").read_text())
    assert manifest["precision"] == decide_precision("auto", detect_device()).precision
    assert manifest["training"]["global_steps"] > 0


def test_unfinished_run_resumes_from_its_last_checkpoint(tmp_path, tiny_config_file):
    out = tmp_path / "resume"
    assert main(["--config", str(tiny_config_file), "--epochs", "1", "--output-dir", str(out)]) == 0
    # What a killed run leaves: checkpoints, but no manifest (the manifest is written last).
    (out / "manifest.json").unlink()
    assert main(["--config", str(tiny_config_file), "--epochs", "2", "--output-dir", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["resumed_from"].endswith("checkpoints/checkpoint-15")
    assert manifest["training"]["global_steps"] == 30
    assert "resuming from" in (out / "training.log").read_text()
