"""Data validation details: line numbers as an editor shows them, the stratified sample that keeps every
class, and the pre-training checks (the model's position limit, the classes ROC AUC needs).

The one-line CLI messages for each bad input are in test_bad_inputs.py; these tests pin the parts.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from tests.conftest import make_texts
from trainer.checks import check_max_length, check_metric_classes, position_limit
from trainer.config import load_config
from trainer.data import load_splits
from trainer.errors import UserError
from trainer.stratify import MIN_ROWS_PER_CLASS


def _splits_of(path, **overrides):
    cfg = load_config(None, "local", {"data.path": str(path), **overrides})
    return load_splits(cfg.data, seed=0)


# ---------------------------------------------------------------- line numbers


def test_csv_line_numbers_count_the_header_blank_lines_and_quoted_line_breaks(tmp_path):
    path = tmp_path / "d.csv"
    rows = "\n".join(f"{t},{lab}" for t, lab in make_texts(30).itertuples(index=False))
    path.write_text(
        'text,label\n"a text\nover two lines",positive\n\n   \n' + rows + "\ntext,label\nlast,negative\n"
    )
    # header 1, the quoted row 2-3, blank 4 and 5, 30 rows 6-35, the repeated header on line 36
    with pytest.raises(UserError, match=r"d\.csv line 36: the header \(text, label\) appears again"):
        _splits_of(path)


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = make_texts(30).to_json(orient="records", lines=True).splitlines()
    lines[4] = '{"text": "a score, not a class", "label": 2.5}'
    path.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
    with pytest.raises(UserError, match=r"d\.jsonl line 6: label 2\.5 in column 'label' is fractional"):
        _splits_of(path)


def test_parquet_rows_are_numbered_from_one(tmp_path):
    path = tmp_path / "d.parquet"
    frame = make_texts(30).assign(
        label=lambda f: f["label"].map({"negative": 0.0, "neutral": 1.0, "positive": 2.0})
    )
    frame.loc[[3, 9], "label"] = [0.5, 1.5]
    frame.to_parquet(path, index=False)
    with pytest.raises(UserError, match=r"d\.parquet rows 4, 10: label 0\.5 in column 'label' is fractional"):
        _splits_of(path)


def test_boolean_texts_are_not_texts(tmp_path):
    path = tmp_path / "d.parquet"
    make_texts(30).assign(text=[i % 2 == 0 for i in range(30)]).to_parquet(path, index=False)
    with pytest.raises(UserError, match=r"rows 1, 2, 3 and 27 more: column 'text' holds values such as True"):
        _splits_of(path)


def test_missing_texts_alongside_strings_are_dropped_not_errors(tmp_path):
    """null in a JSON text column is a missing text (dropped and counted), not a non-text value."""
    frame = make_texts(30).astype(object)
    frame.loc[[2, 5], "text"] = None
    path = tmp_path / "d.jsonl"
    frame.to_json(path, orient="records", lines=True)
    assert _splits_of(path).sources[0]["dropped"] == 2


# ---------------------------------------------------------------- a column name given twice


def test_a_repeated_column_name_is_refused_where_pandas_would_rename_it(tmp_path):
    """pandas reads `label,text,text` as label, text, text.1 and the first `text` would be trained on."""
    path = tmp_path / "d.tsv"
    rows = "".join(
        f"{lab}\t{t}\tsummary {i}\n" for i, (t, lab) in enumerate(make_texts(30).itertuples(index=False))
    )
    path.write_text("\ufeff\nlabel\ttext\ttext\n" + rows, encoding="utf-8")  # a BOM and a blank line first
    with pytest.raises(UserError) as refused:
        _splits_of(path)
    assert str(refused.value) == (
        f"data file {path} has duplicated column names: 'text' (columns 2, 3); rename or delete the extra "
        "columns so that each name appears once in the header"
    )


def test_every_repeated_column_name_is_named_in_header_order(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("label,text,id,label,text,text\n" + "b,a,1,b,a,a\n" * 30)
    with pytest.raises(UserError, match=r"'label' \(columns 1, 4\), 'text' \(columns 2, 5, 6\);"):
        _splits_of(path)


def test_a_key_repeated_in_a_jsonl_record_is_refused_with_its_line(tmp_path):
    """JSON keeps the last of two equal keys, silently."""
    path = tmp_path / "d.jsonl"
    lines = make_texts(30).to_json(orient="records", lines=True).splitlines()
    lines[6] = '{"text": "first", "label": "positive", "text": "second"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"d\.jsonl line 7: key 'text' appears more than once in the record"):
        _splits_of(path)


def test_a_parquet_file_with_a_repeated_column_name_is_refused_in_words(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = make_texts(30)
    table = pa.table([frame["text"], frame["label"], frame["text"]], names=["text", "label", "text"])
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    with pytest.raises(UserError, match=r"d\.parquet has duplicated column names: 'text' \(columns 1, 3\)"):
        _splits_of(path)


def test_unnamed_columns_and_a_real_dotted_name_are_not_duplicates(tmp_path):
    """Trailing commas (empty header cells) name no column; a column called `text.1` is just a name."""
    path = tmp_path / "d.csv"
    rows = "".join(f"{t},{lab},x,,\n" for t, lab in make_texts(30).itertuples(index=False))
    path.write_text("text,label,text.1,,\n" + rows)
    assert sum(_splits_of(path).counts().values()) == 30


# ---------------------------------------------------------------- the max_rows sample


def _rare_frame(n: int = 3000, rare: int = 5) -> pd.DataFrame:
    frame = make_texts(n, seed=2)
    frame.loc[: rare - 1, "label"] = "rare"
    return frame


def test_max_rows_keeps_a_class_too_small_for_its_share(tmp_path, caplog):
    """5 rows in 3000 would be 0.17 rows of a 100-row sample: it keeps 3, one for each split."""
    path = tmp_path / "d.csv"
    _rare_frame().to_csv(path, index=False)
    with caplog.at_level(logging.INFO, logger="trainer"):
        splits = _splits_of(path, **{"data.max_rows": 100})
    assert sum(splits.counts().values()) == 100
    rare = splits.labels.index("rare")
    kept = sum(int((part["label"] == rare).sum()) for part in (splits.train, splits.val, splits.test))
    assert kept == MIN_ROWS_PER_CLASS and (splits.train["label"] == rare).any()
    assert all((splits.train["label"] == i).any() for i in range(len(splits.labels)))
    assert "kept 3 rows of each: 'rare' (5)" in caplog.text


def test_max_rows_sample_is_sklearns_when_no_class_is_small(tmp_path):
    """The guard changes nothing for ordinary data: the same rows as scikit-learn's stratified sample."""
    from trainer.stratify import stratified_sample

    frame = make_texts(900, seed=4)
    expected, _ = train_test_split(frame, train_size=120, stratify=frame["label"], random_state=7)
    got = stratified_sample(frame, 120, 7, "d.csv")
    assert got.index.tolist() == expected.index.tolist()


def test_max_rows_sample_is_seeded(tmp_path):
    from trainer.stratify import stratified_sample

    frame = _rare_frame(600, rare=4)
    a, b, c = (stratified_sample(frame, 60, seed, "d.csv") for seed in (1, 1, 2))
    assert a.index.tolist() == b.index.tolist() != c.index.tolist()
    assert len(a) == 60 and (a["label"] == "rare").sum() == MIN_ROWS_PER_CLASS


def test_every_class_too_small_is_named_at_once(tmp_path):
    frame = pd.concat(
        [make_texts(300), pd.DataFrame({"text": ["x", "y", "z"], "label": ["postive", "negatve", "negatve"]})]
    )
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"labels 'postive' \(1\), 'negatve' \(2\) have fewer than 3 rows"):
        _splits_of(path)


# ---------------------------------------------------------------- pre-training checks


def test_position_limit_reads_the_models_config():
    """Real transformers configs: BERT's table, RoBERTa's padding offset, DeBERTa's relative positions."""
    from transformers import BertConfig, DebertaV2Config, GPT2Config, RobertaConfig

    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert position_limit(GPT2Config(n_positions=1024)) == 1024
    assert position_limit(DebertaV2Config(position_biased_input=False)) is None


def test_max_length_within_the_limit_passes(tiny_model_dir):
    check_max_length(str(tiny_model_dir), 64)
    with pytest.raises(UserError, match=r"model\.max_length 65 is above the position limit .* \(64 tokens\)"):
        check_max_length(str(tiny_model_dir), 65)


def test_roc_auc_check_passes_when_validation_has_every_class(tmp_path):
    path = tmp_path / "d.csv"
    make_texts(300).to_csv(path, index=False)
    splits = _splits_of(path)
    check_metric_classes("eval_roc_auc", splits)
    splits.val = splits.val[splits.val["label"] != 1]
    check_metric_classes("eval_f1_macro", splits)  # other metrics do not need every class
    with pytest.raises(UserError, match="no rows of 'neutral', so ROC AUC is undefined"):
        check_metric_classes("eval_roc_auc", splits)
