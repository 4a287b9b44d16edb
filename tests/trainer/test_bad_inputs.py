"""Bad input: exit 2, one line naming the problem, no traceback, the output folder untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import make_texts
from tests.support import ROOT
from trainer.cli import main


@pytest.fixture
def env(tmp_path, tiny_model_dir, tiny_csv):
    """A valid base invocation; each case breaks one thing."""
    out = tmp_path / "out"
    base = [
        "--config",
        str(ROOT / "config/local.yaml"),
        "--output-dir",
        str(out),
        "--set",
        f"model.name={tiny_model_dir}",
        "--set",
        f"data.path={tiny_csv}",
        "--set",
        "data.max_rows=null",
    ]
    return {"tmp": tmp_path, "out": out, "base": base, "model": tiny_model_dir, "csv": tiny_csv}


def _csv(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def case_args(case: str, e: dict) -> tuple[list[str], str]:
    """(extra args, substring the one-line message must contain)."""
    tmp = e["tmp"]
    if case == "unknown-file-key":
        bad = tmp / "bad.yaml"
        bad.write_text("trian:\n  epochs: 1\n")
        return ["--config", str(bad)], "unknown key trian (did you mean train?)"
    if case == "unknown-set-key":
        return ["--set", "train.lerning_rate=0.1"], "did you mean train.learning_rate?"
    if case == "wrong-type-flag":
        return ["--epochs", "three"], "--epochs (train.epochs) must be a number"
    if case == "out-of-range":
        return ["--batch-size", "0"], "--batch-size (train.batch_size) must be > 0"
    if case == "bad-scheduler":
        return ["--set", "train.lr_scheduler=cosin"], "did you mean cosine?"
    if case == "bad-mode":
        return ["--mode", "prod"], "--mode 'prod' is not one of local, cloud"
    if case == "missing-config":
        return ["--config", str(tmp / "nope.yaml")], "config file not found"
    if case == "invalid-yaml":
        bad = tmp / "broken.yaml"
        bad.write_text("train: {epochs: 1\n")
        return ["--config", str(bad)], "is not valid YAML"
    if case == "set-without-equals":
        return ["--set", "train.epochs"], "expected dotted.key=value"
    if case == "missing-data-file":
        return ["--set", f"data.path={tmp / 'missing.csv'}"], "data file not found"
    if case == "missing-column":
        return ["--set", "data.text_column=tweet"], "has no column 'tweet'"
    if case == "unsupported-extension":
        bad = tmp / "data.xlsx"
        bad.write_text("x")
        return ["--set", f"data.path={bad}"], "unsupported extension '.xlsx'"
    if case == "unreadable-parquet":
        bad = tmp / "data.parquet"
        bad.write_bytes(b"this is not parquet")
        return ["--set", f"data.path={bad}"], "cannot read data file"
    if case == "one-class":
        path = _csv(tmp, "one.csv", make_texts(60, labels=("positive",)))
        return ["--set", f"data.path={path}"], "only one label ('positive')"
    if case == "unseen-label":
        train = _csv(tmp, "train.csv", make_texts(60, labels=("negative", "positive")))
        val = _csv(tmp, "val.csv", make_texts(9))
        test = _csv(tmp, "test.csv", make_texts(9, labels=("negative", "positive")))
        return [
            "--set",
            "data.path=null",
            "--set",
            f"data.train_path={train}",
            "--set",
            f"data.val_path={val}",
            "--set",
            f"data.test_path={test}",
        ], "label 'neutral' appears in val but never in train"
    if case == "path-and-splits":
        return [
            "--set",
            f"data.train_path={e['csv']}",
        ], "data.path and data.train_path/val_path/test_path are exclusive"
    if case == "missing-model-folder":
        return ["--set", f"model.name={tmp / 'no-model'}"], "does not exist"
    if case == "broken-model-folder":
        folder = tmp / "half-downloaded"
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "distilbert"}')
        return ["--set", f"model.name={folder}"], "cannot load model.name"
    if case == "metric-typo":
        return ["--set", "train.early_stopping.metric=eval_f1"], "did you mean eval_f1_macro?"
    if case == "foreign-output-folder":
        e["out"].mkdir()
        (e["out"] / "thesis.docx").write_text("precious")
        return [], "holds files that are not from a training run"
    raise AssertionError(case)


CASES = [
    "unknown-file-key",
    "unknown-set-key",
    "wrong-type-flag",
    "out-of-range",
    "bad-scheduler",
    "bad-mode",
    "missing-config",
    "invalid-yaml",
    "set-without-equals",
    "missing-data-file",
    "missing-column",
    "unsupported-extension",
    "unreadable-parquet",
    "one-class",
    "unseen-label",
    "path-and-splits",
    "missing-model-folder",
    "metric-typo",
    "foreign-output-folder",
]


def _snapshot(folder):
    if not folder.exists():
        return None
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_exit_2_and_one_line(case, env, capsys):
    extra, expected = case_args(case, env)
    before = _snapshot(env["out"])
    code = main(env["base"] + extra)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    message = [line for line in err if line.startswith("trainer: error:")]
    assert len(message) == 1, err
    assert expected in message[0], message[0]
    assert not any("Traceback" in line for line in err), err
    assert _snapshot(env["out"]) == before, "the output folder must be untouched"


def test_unknown_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--epoch", "1", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["trainer: error: unrecognized arguments: --bogus (see python -m trainer --help)"]


def test_real_process_exit_code_and_no_traceback(env):
    res = subprocess.run(
        [sys.executable, "-m", "trainer", *env["base"], "--set", "train.lerning_rate=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "trainer: error: unknown key train.lerning_rate (did you mean train.learning_rate?)"
    ]
    assert not env["out"].exists()


def test_hub_model_not_cached_names_the_model_and_the_fix(env):
    res = subprocess.run(
        [sys.executable, "-m", "trainer", *env["base"], "--set", "model.name=distilbert-base-uncased"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(env["tmp"] / "hf")},
    )
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "trainer: error: model 'distilbert-base-uncased' is not in the local Hugging Face cache"
    )
    assert "set model.name to that local folder" in line
    assert "Traceback" not in res.stderr
    assert not env["out"].exists()


def test_help_documents_every_flag_and_key():
    res = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert res.returncode == 0
    for flag in (
        "--config",
        "--mode",
        "--output-dir",
        "--epochs",
        "--batch-size",
        "--learning-rate",
        "--fp16",
        "--no-early-stopping",
        "--seed",
        "--set",
        "--overwrite",
    ):
        assert flag in res.stdout
    for key in ("train.warmup_ratio", "train.early_stopping.patience", "data.label_column", "runtime.bucket"):
        assert key in res.stdout
