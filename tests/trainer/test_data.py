"""Data loading: every supported format, the three-file layout, cleaning, the demo corpus."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tests.conftest import make_texts
from trainer.config import load_config
from trainer.data import load_splits
from trainer.demo_data import build as build_demo


def _write(frame: pd.DataFrame, path, kind: str):
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif kind == "parquet":
        frame.to_parquet(path, index=False)
    elif kind == "saved":
        import datasets

        datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "name"), [("csv", "d.csv"), ("jsonl", "d.jsonl"), ("parquet", "d.parquet"), ("saved", "d_saved")]
)
def test_every_format_gives_the_same_stratified_split(tmp_path, kind, name):
    frame = make_texts(200, seed=3).rename(columns={"text": "tweet", "label": "class"})
    path = _write(frame, tmp_path / name, kind)
    cfg = load_config(
        None, "local", {"data.path": str(path), "data.text_column": "tweet", "data.label_column": "class"}
    )
    splits = load_splits(cfg.data, seed=42)
    assert splits.counts() == {"train": 160, "val": 20, "test": 20}
    assert splits.labels == ["negative", "neutral", "positive"]
    for part in (splits.train, splits.val, splits.test):  # stratified: every class in every split
        assert set(part["label"]) == {0, 1, 2}
    assert len(splits.sources[0]["sha256"]) == 64 and splits.sources[0]["rows"] == 200


def test_split_is_seeded(tmp_path):
    path = _write(make_texts(200), tmp_path / "d.csv", "csv")
    cfg = load_config(None, "local", {"data.path": str(path)})
    a, b, c = (load_splits(cfg.data, seed=s) for s in (1, 1, 2))
    assert a.test["text"].tolist() == b.test["text"].tolist() != c.test["text"].tolist()


def test_integer_labels_keep_numeric_order(tmp_path):
    frame = make_texts(90).assign(
        label=lambda f: f["label"].map({"negative": 10, "neutral": 2, "positive": 1})
    )
    cfg = load_config(None, "local", {"data.path": str(_write(frame, tmp_path / "d.csv", "csv"))})
    assert load_splits(cfg.data, seed=0).labels == ["1", "2", "10"]


def test_three_files_are_used_as_they_are(tmp_path):
    paths = {
        s: _write(make_texts(n, seed=i), tmp_path / f"{s}.jsonl", "jsonl")
        for i, (s, n) in enumerate([("train", 90), ("val", 12), ("test", 15)])
    }
    cfg = load_config(
        None,
        "local",
        {
            "data.path": None,
            "data.train_path": str(paths["train"]),
            "data.val_path": str(paths["val"]),
            "data.test_path": str(paths["test"]),
        },
    )
    splits = load_splits(cfg.data, seed=0)
    assert splits.counts() == {"train": 90, "val": 12, "test": 15}
    assert [s["split"] for s in splits.sources] == ["train", "val", "test"]


def test_empty_and_missing_texts_are_dropped_and_counted(tmp_path, caplog):
    frame = make_texts(60)
    frame.loc[[0, 1, 2], "text"] = ["", "   ", None]
    frame.loc[3, "label"] = None
    cfg = load_config(None, "local", {"data.path": str(_write(frame, tmp_path / "d.csv", "csv"))})
    with caplog.at_level(logging.INFO, logger="trainer"):
        splits = load_splits(cfg.data, seed=0)
    assert sum(splits.counts().values()) == 56
    assert splits.sources[0]["dropped"] == 4
    assert "dropped 4 rows with an empty or missing text or label" in caplog.text


def test_labels_are_stripped_and_blank_labels_are_dropped_like_missing_ones(tmp_path, caplog):
    """ "positive " is "positive"; a label of spaces is no label: the row is dropped and counted, and the
    log names its line (header = line 1)."""
    frame = make_texts(60)
    frame.loc[::2, "label"] = frame.loc[::2, "label"] + " "
    frame.loc[1, "label"] = " neutral"
    frame.loc[[4, 7], "label"] = ["  ", ""]
    cfg = load_config(None, "local", {"data.path": str(_write(frame, tmp_path / "d.csv", "csv"))})
    with caplog.at_level(logging.INFO, logger="trainer"):
        splits = load_splits(cfg.data, seed=0)
    assert splits.labels == ["negative", "neutral", "positive"]
    assert sum(splits.counts().values()) == 58 and splits.sources[0]["dropped"] == 2
    assert "dropped 2 rows with an empty or missing text or label (lines 6, 9)" in caplog.text


def test_integer_labels_from_parquet_and_jsonl_are_class_names(tmp_path):
    """Whole-number floats (1.0, as a column with a gap becomes) are the class "1"."""
    frame = make_texts(90).assign(
        label=lambda f: f["label"].map({"negative": 0, "neutral": 1, "positive": 2})
    )
    frame["label"] = frame["label"].astype(float)
    for kind in ("parquet", "jsonl"):
        cfg = load_config(None, "local", {"data.path": str(_write(frame, tmp_path / f"d.{kind}", kind))})
        assert load_splits(cfg.data, seed=0).labels == ["0", "1", "2"]


def test_texts_that_look_like_numbers_stay_texts_in_jsonl(tmp_path):
    """JSON strings stay strings: "2020" is a text (pandas would otherwise read the column as numbers)."""
    frame = make_texts(60).assign(text=[str(1000 + i) for i in range(60)])
    cfg = load_config(None, "local", {"data.path": str(_write(frame, tmp_path / "d.jsonl", "jsonl"))})
    splits = load_splits(cfg.data, seed=0)
    texts = pd.concat([splits.train, splits.val, splits.test])["text"]
    assert sorted(texts) == sorted(frame["text"])


def test_max_rows_keeps_a_stratified_sample(tmp_path):
    cfg = load_config(
        None,
        "local",
        {"data.path": str(_write(make_texts(300), tmp_path / "d.csv", "csv")), "data.max_rows": 100},
    )
    splits = load_splits(cfg.data, seed=0)
    assert sum(splits.counts().values()) == 100
    assert splits.train["label"].value_counts().max() - splits.train["label"].value_counts().min() <= 1


def test_make_data_writes_the_demo_corpus(tmp_path):
    path = build_demo(tmp_path / "demo")
    frame = pd.read_csv(path, encoding="utf-8")
    assert list(frame.columns) == ["text", "label"]
    assert set(frame["label"]) == {"negative", "neutral", "positive"}
    assert len(frame) > 30000 and frame["text"].is_unique and not frame.isna().any().any()
