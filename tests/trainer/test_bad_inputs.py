"""Bad input: exit 2, one line naming the problem, no traceback, the output folder untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import make_texts
from tests.support import ROOT
from trainer.cli import main
from trainer.config import load_config


@pytest.fixture
def env(tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    """A valid base invocation; each case breaks one thing."""
    monkeypatch.delenv("TRAINER_BUCKET", raising=False)
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
    return {
        "tmp": tmp_path,
        "out": out,
        "base": base,
        "model": tiny_model_dir,
        "csv": tiny_csv,
        "mp": monkeypatch,
    }


def _csv(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _data(path) -> list[str]:
    return ["--set", f"data.path={path}"]


def data_case_args(case: str, e: dict) -> tuple[list[str], str] | None:
    """Data that crashed, or was trained on as it came, before issue 11 (see its table)."""
    tmp, frame = e["tmp"], make_texts(300, seed=1)
    if case == "repeated-header":
        twice = tmp / "twice.csv"
        twice.write_text(e["csv"].read_text() + e["csv"].read_text())  # two CSVs concatenated
        return _data(twice), (
            f"{twice} line 302: the header (text, label) appears again inside the data (files "
            "concatenated?): delete that line"
        )
    if case == "duplicate-column-names":  # pandas renamed the second 'text' 'text.1' and used the first
        path = tmp / "two-texts.csv"
        body = frame.assign(summary=frame["text"].str.upper()).to_csv(index=False).split("\n", 1)[1]
        path.write_text("text,label,text\n" + body)
        return _data(path), (
            f"data file {path} has duplicated column names: 'text' (columns 1, 3); rename or delete the "
            "extra columns so that each name appears once in the header"
        )
    if case == "all-blank-texts":
        path = _csv(tmp, "blank.csv", frame.assign(text="   "))
        return _data(path), f"{path}: every text in column 'text' is empty (300 rows): point data.text_column"
    if case == "numeric-texts":
        path = tmp / "ids.parquet"
        frame.assign(text=range(300)).to_parquet(path, index=False)
        return _data(path), (
            f"{path} rows 1, 2, 3 and 297 more: column 'text' holds numbers such as 0, not texts: "
            "point data.text_column at the column with the texts"
        )
    if case == "a-number-among-texts":
        path = tmp / "mixed.jsonl"
        frame.astype(object).assign(text=lambda f: f["text"].where(f.index != 7, 2020)).to_json(
            path, orient="records", lines=True
        )
        return _data(path), f"{path} line 8: column 'text' holds numbers such as 2020, not texts"
    if case == "fractional-label":
        path = tmp / "scores.parquet"
        labels = frame["label"].map({"negative": 0.0, "neutral": 1.0, "positive": 2.0})
        frame.assign(label=labels.where(labels.index != 11, 1.5)).to_parquet(path, index=False)
        return _data(path), (
            f"{path} row 12: label 1.5 in column 'label' is fractional; labels must be class names or "
            "whole numbers"
        )
    if case == "singleton-class-with-max-rows":
        lone = pd.DataFrame([{"text": "a lone row", "label": "postive"}])
        path = _csv(tmp, "typo.csv", pd.concat([make_texts(600, seed=2), lone]))
        return [*_data(path), "--set", "data.max_rows=100"], (
            f"{path}: label 'postive' (1) has fewer than 3 rows; a stratified train/val/test split needs "
            "one in each: fix or remove those rows"
        )
    if case == "max-rows-below-classes":
        path = _csv(tmp, "four.csv", frame.assign(label=[f"class{i % 4}" for i in range(300)]))
        return [*_data(path), "--set", "data.max_rows=10"], (
            f"{path}: data.max_rows=10 cannot keep 3 rows of each of the 4 classes: set data.max_rows to "
            "at least 12, or null to keep every row"
        )
    if case == "split-too-small-for-classes":
        small = pd.DataFrame(
            {"text": [f"text {i}" for i in range(15)], "label": [c for c in "abcde" for _ in "123"]}
        )
        path = _csv(tmp, "small.csv", small)
        return _data(path), (
            f"{path}: 15 rows give a test split of 2 and a validation split of 2 rows, fewer than the 5 "
            "classes (each split needs one row of every class): use more rows"
        )
    if case == "max-length-above-position-limit":
        return ["--set", "model.max_length=512"], (
            f"model.max_length 512 is above the position limit of model '{e['model']}' (64 tokens): "
            "set model.max_length to 64 or less"
        )
    if case == "roc-auc-without-a-class-in-validation":
        train = _csv(tmp, "train.csv", make_texts(60))
        val = _csv(tmp, "val.csv", make_texts(10, labels=("negative", "positive")))
        test = _csv(tmp, "test.csv", make_texts(9))
        splits = [
            "data.path=null",
            f"data.train_path={train}",
            f"data.val_path={val}",
            f"data.test_path={test}",
        ]
        return [a for s in [*splits, "train.early_stopping.metric=eval_roc_auc"] for a in ("--set", s)], (
            "train.early_stopping.metric is eval_roc_auc, but the validation split has no rows of 'neutral', "
            "so ROC AUC is undefined: choose another metric"
        )
    return None


def config_case_args(case: str, e: dict) -> tuple[list[str], str] | None:
    tmp = e["tmp"]
    if case == "unset-variable":
        e["mp"].delenv("TRAINER_TEST_BS", raising=False)
        path = tmp / "var.yaml"
        path.write_text("train:\n  batch_size: ${TRAINER_TEST_BS}\n")
        return ["--config", str(path)], (
            f"{path}: train.batch_size is ${{TRAINER_TEST_BS}}, but TRAINER_TEST_BS is not set: export "
            "TRAINER_TEST_BS=VALUE, give a default (${TRAINER_TEST_BS:-VALUE}), or pass "
            "--set train.batch_size=VALUE"
        )
    if case == "cloud-without-bucket":
        return ["--mode", "cloud"], (
            f"{ROOT / 'config/local.yaml'}: runtime.bucket is ${{TRAINER_BUCKET}}, but TRAINER_BUCKET is not "
            "set, and cloud mode syncs checkpoints and artifacts there: export TRAINER_BUCKET=gs://bucket[/prefix]"
        )
    if case == "cloud-with-empty-bucket-variable":  # compose passes ${TRAINER_BUCKET:-}: set, but empty
        e["mp"].setenv("TRAINER_BUCKET", "")
        return ["--mode", "cloud"], "runtime.bucket is ${TRAINER_BUCKET}, but TRAINER_BUCKET is empty"
    if case == "empty-config-file":
        path = tmp / "empty.yaml"
        path.write_text("# all settings to come\n")
        return ["--config", str(path)], f"config file {path} has no settings (it is empty or only comments)"
    return None


def case_args(case: str, e: dict) -> tuple[list[str], str]:
    """(extra args, substring the one-line message must contain)."""
    found = data_case_args(case, e) or config_case_args(case, e)
    if found:
        return found
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
    "repeated-header",
    "duplicate-column-names",
    "all-blank-texts",
    "numeric-texts",
    "a-number-among-texts",
    "fractional-label",
    "singleton-class-with-max-rows",
    "max-rows-below-classes",
    "split-too-small-for-classes",
    "max-length-above-position-limit",
    "roc-auc-without-a-class-in-validation",
    "unset-variable",
    "cloud-without-bucket",
    "cloud-with-empty-bucket-variable",
    "empty-config-file",
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
    if before is None:
        assert not env["out"].exists(), "nothing may be written before the inputs are checked"


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


# ---------------------------------------------------------------- config variables that are set


def test_a_variable_default_sets_a_typed_key_and_string_keys_keep_their_text(tmp_path, monkeypatch):
    """`${BS:-16}` is read as YAML reads 16 (an integer key); `${NAME:-007}` stays the text 007."""
    for name in ("TRAINER_TEST_BS", "TRAINER_TEST_NAME", "TRAINER_TEST_ES", "TRAINER_TEST_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "vars.yaml"
    path.write_text(
        "model:\n  name: ${TRAINER_TEST_NAME:-007}\n"
        "train:\n  batch_size: ${TRAINER_TEST_BS:-16}\n"
        "  early_stopping:\n    enabled: ${TRAINER_TEST_ES:-false}\n"
        "runtime:\n  bucket: ${TRAINER_TEST_BUCKET:-}\n  output_dir: runs/${TRAINER_TEST_NAME:-a}-x\n"
    )
    cfg = load_config(path)
    assert (
        cfg.train.batch_size == 16 and cfg.model.name == "007" and cfg.train.early_stopping.enabled is False
    )
    assert cfg.runtime.bucket is None and cfg.runtime.output_dir == "runs/a-x"
    monkeypatch.setenv("TRAINER_TEST_BS", "48")
    monkeypatch.setenv("TRAINER_TEST_NAME", "b")
    cfg = load_config(path)
    assert cfg.train.batch_size == 48 and cfg.model.name == "b" and cfg.runtime.output_dir == "runs/b-x"


def test_a_flag_replaces_an_unset_variable_without_complaint(monkeypatch, capsys):
    """--set runtime.bucket=... (or =null) in cloud mode: the unset TRAINER_BUCKET is never read."""
    monkeypatch.delenv("TRAINER_BUCKET", raising=False)
    cfg = load_config(ROOT / "config/local.yaml", "cloud", {"runtime.bucket": "gs://flag-bucket"})
    assert cfg.runtime.bucket == "gs://flag-bucket"
    assert load_config(ROOT / "config/local.yaml", "cloud", {"runtime.bucket": None}).runtime.bucket is None
    assert main(["--config", str(ROOT / "config/local.yaml"), "--mode", "cloud", "--print-config"]) == 2
    assert "TRAINER_BUCKET is not set" in capsys.readouterr().err
