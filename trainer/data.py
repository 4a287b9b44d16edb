"""Data: read CSV / JSONL / Parquet / a `save_to_disk` folder, clean, map labels, split, tokenize.

Every problem in the rows is found here, before the output folder is touched, and reported in one line
that names the file, the line (row) as the user sees it, and the fix. Rows with an empty or missing
text or label (after stripping whitespace) are dropped and counted; everything else that looks wrong
(a repeated header line, non-text texts, fractional labels, no usable row at all) is an error.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import DataConfig
from trainer.errors import UserError
from trainer.stratify import check_class_sizes, stratified_sample, stratified_split

log = logging.getLogger(__name__)

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
SHOWN_ROWS = 3
"how many row numbers a message lists before saying how many more"


@dataclass
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    labels: list[str]
    "label names, index = id"
    sources: list[dict[str, Any]] = field(default_factory=list)
    "one entry per input file: path, sha256, rows read, rows dropped"

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass(frozen=True)
class Source:
    """One input file: the name the user gave (a path or gs:// URL) and the local file that was read."""

    name: str
    local: Path

    @property
    def kind(self) -> str:
        return "dataset" if self.local.is_dir() else READERS.get(self.local.suffix.lower(), "")

    def where(self, positions: Sequence[int]) -> str:
        """'line 12' / 'lines 3, 7, 9 and 4 more' for text files, 'row N' for Parquet and datasets."""
        shown = self._numbers(list(positions[:SHOWN_ROWS]))
        unit = "line" if self.kind in ("csv", "tsv", "jsonl") else "row"
        more = f" and {len(positions) - SHOWN_ROWS} more" if len(positions) > SHOWN_ROWS else ""
        return f"{unit}{'s' if len(positions) > 1 else ''} {', '.join(map(str, shown))}{more}"

    def _numbers(self, positions: list[int]) -> list[int]:
        """1-based line numbers of data rows (by position): the header, blank lines and quoted line breaks
        are counted as an editor counts them."""
        if self.kind in ("csv", "tsv"):
            lines = _csv_record_lines(self.local, "\t" if self.kind == "tsv" else ",", max(positions))
        elif self.kind == "jsonl":
            with self.local.open(encoding="utf-8") as fh:
                lines = [n for n, text in enumerate(fh, 1) if text.strip()]
        else:
            return [p + 1 for p in positions]
        return [lines[p] if p < len(lines) else p + 2 for p in positions]


def _csv_record_lines(path: Path, sep: str, last: int) -> list[int]:
    """The line each data record starts on, skipping the header and blank lines as pandas does."""
    starts: list[int] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header_seen, next_line = False, 1
        for record in reader:
            start, next_line = next_line, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if not header_seen:
                header_seen = True
                continue
            starts.append(start)
            if len(starts) > last:
                break
    return starts


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def local_path(path_str: str) -> Path:
    """The file to read: gs:// objects (or folders) are downloaded to the local cache first."""
    if path_str.startswith("gs://"):
        from trainer.storage import download

        return download(path_str)
    return Path(path_str)


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"data file not found: {path} (check data.path / data.*_path or run `make data`)")
    if path.is_dir():
        return _read_saved_dataset(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"data file {path} has an unsupported extension {path.suffix!r}: use .csv, .tsv, .jsonl, "
            ".parquet or a folder written by datasets' save_to_disk"
        )
    try:
        if kind in ("csv", "tsv"):
            # low_memory=False: one type per column, never ints in one chunk and strings in the next.
            sep = "\t" if kind == "tsv" else ","
            return pd.read_csv(path, sep=sep, encoding="utf-8", low_memory=False)
        if kind == "jsonl":
            # dtype=False: JSON strings stay strings ("2020" is a text, not a number).
            return pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError:
        raise UserError(
            f"data file {path} is not UTF-8: convert it (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    except pd.errors.EmptyDataError:
        raise UserError(f"data file {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read data file {path} as {kind}: {first}") from None


def _read_saved_dataset(path: Path) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"{path} is a folder but not one written by datasets' save_to_disk: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(
            f"{path} holds several splits ({', '.join(ds)}): point data.train_path/val_path/test_path "
            "at the split folders, or save one Dataset"
        )
    return ds.to_pandas()


# ---------------------------------------------------------------------------------------------
# Cleaning: one frame of (text, label) strings, or one line naming the row and the fix


def _clean(df: pd.DataFrame, cfg: DataConfig, source: Source) -> tuple[pd.DataFrame, int]:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if missing:
        raise UserError(
            f"{source.name} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))}); "
            "set data.text_column / data.label_column"
        )
    raw_text = df[cfg.text_column].reset_index(drop=True)
    raw_label = df[cfg.label_column].reset_index(drop=True)
    _check_repeated_header(raw_text, raw_label, cfg, source)
    _check_texts_are_strings(raw_text, cfg.text_column, source)
    _check_whole_labels(raw_label, cfg.label_column, source)

    text = raw_text.astype("string").str.strip()
    label = raw_label.map(_label_str, na_action="ignore").astype("string").str.strip()
    has_text = text.notna() & (text != "")
    has_label = label.notna() & (label != "")
    keep = has_text & has_label
    if not keep.any():
        raise _no_usable_rows(has_text, has_label, cfg, source, list(df.columns))
    dropped = np.flatnonzero(~keep.to_numpy())
    if len(dropped):
        log.info(
            "%s: dropped %d rows with an empty or missing text or label (%s)",
            source.name,
            len(dropped),
            source.where(dropped),
        )
    out = pd.DataFrame({"text": text[keep].astype(str), "label": label[keep].astype(str)})
    return out.reset_index(drop=True), len(dropped)


def _check_repeated_header(text: pd.Series, label: pd.Series, cfg: DataConfig, source: Source) -> None:
    """Two CSVs concatenated: the second header becomes a row whose label is the column's name."""
    is_header = (text.astype("string").str.strip() == cfg.text_column) & (
        label.astype("string").str.strip() == cfg.label_column
    )
    rows = np.flatnonzero(is_header.fillna(False).to_numpy())
    if len(rows):
        raise UserError(
            f"{source.name} {source.where(rows)}: the header ({cfg.text_column}, {cfg.label_column}) "
            "appears again inside the data (files concatenated?): delete that line"
        )


def _check_texts_are_strings(text: pd.Series, column: str, source: Source) -> None:
    """Numbers or booleans where texts belong mean the wrong column, or a file that lost its quoting."""
    bad = [i for i, v in enumerate(text.to_numpy()) if not isinstance(v, str) and not _is_missing(v)]
    if bad:
        first = _plain(text.iloc[bad[0]])
        kind = "numbers" if isinstance(first, (int, float)) and not isinstance(first, bool) else "values"
        raise UserError(
            f"{source.name} {source.where(bad)}: column {column!r} holds {kind} such as {first!r}, not "
            "texts: point data.text_column at the column with the texts, or store every text as a string"
        )


def _plain(value: Any) -> Any:
    """numpy scalars as the Python values a user wrote (1.5, not np.float64(1.5))."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _check_whole_labels(label: pd.Series, column: str, source: Source) -> None:
    """A class id must be a name or a whole number: 1.5 is a score, not a class."""
    bad = [
        i
        for i, v in enumerate(label.to_numpy())
        if isinstance(v, (float, np.floating)) and not np.isnan(v) and not float(v).is_integer()
    ]
    if bad:
        raise UserError(
            f"{source.name} {source.where(bad)}: label {_plain(label.iloc[bad[0]])!r} in column "
            f"{column!r} is fractional; labels must be class names or whole numbers: fix those rows or point "
            "data.label_column at the class column"
        )


def _no_usable_rows(has_text, has_label, cfg: DataConfig, source: Source, columns) -> UserError:
    names = ", ".join(map(str, columns))
    if not has_text.any():
        return UserError(
            f"{source.name}: every text in column {cfg.text_column!r} is empty ({len(has_text)} rows): "
            f"point data.text_column at the column with the texts (columns: {names})"
        )
    if not has_label.any():
        return UserError(
            f"{source.name}: every label in column {cfg.label_column!r} is empty ({len(has_label)} rows): "
            f"point data.label_column at the column with the labels (columns: {names})"
        )
    return UserError(
        f"{source.name}: no row has both a text and a label ({len(has_text)} rows): fill in the "
        f"{cfg.label_column!r} column for the texts"
    )


def _label_str(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value)


def _sort_labels(values: set[str]) -> list[str]:
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


# ---------------------------------------------------------------------------------------------
# Splits


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.path:
        return _single_file(cfg, seed)
    return _three_files(cfg)


def _single_file(cfg: DataConfig, seed: int) -> Splits:
    path = str(cfg.path)
    source = Source(path, local_path(path))
    raw = read_table(source.local)
    df, dropped = _clean(raw, cfg, source)
    labels = _sort_labels(set(df["label"]))
    _check_classes(labels, path)
    check_class_sizes(df["label"], path)
    if cfg.max_rows and len(df) > cfg.max_rows:
        df = stratified_sample(df, cfg.max_rows, seed, path)
        log.info("data.max_rows=%d: kept a stratified sample of %d rows", cfg.max_rows, len(df))
    train, val, test = stratified_split(df, cfg, seed, path, labels)
    info = {"path": path, "sha256": file_sha256(source.local), "rows": len(raw), "dropped": dropped}
    return _finish(train, val, test, labels, [info])


def _three_files(cfg: DataConfig) -> Splits:
    frames, sources = {}, []
    for split, path in (("train", cfg.train_path), ("val", cfg.val_path), ("test", cfg.test_path)):
        source = Source(str(path), local_path(str(path)))
        raw = read_table(source.local)
        frames[split], dropped = _clean(raw, cfg, source)
        sources.append(
            {
                "split": split,
                "path": str(path),
                "sha256": file_sha256(source.local),
                "rows": len(raw),
                "dropped": dropped,
            }
        )
    labels = _sort_labels(set(frames["train"]["label"]))
    _check_classes(labels, str(cfg.train_path))
    for split in ("val", "test"):
        unseen = sorted(set(frames[split]["label"]) - set(labels))
        if unseen:
            raise UserError(
                f"{getattr(cfg, split + '_path')}: label {unseen[0]!r} appears in {split} but never in train"
            )
    return _finish(frames["train"], frames["val"], frames["test"], labels, sources)


def _check_classes(labels: list[str], source: str) -> None:
    if len(labels) < 2:
        raise UserError(f"{source}: only one label ({labels[0]!r}); a classifier needs at least two classes")


def _finish(train, val, test, labels, sources) -> Splits:
    ids = {name: i for i, name in enumerate(labels)}
    parts = [
        frame.assign(label=frame["label"].map(ids)).reset_index(drop=True) for frame in (train, val, test)
    ]
    splits = Splits(*parts, labels=labels, sources=sources)
    log.info("data: %s rows, %d labels: %s", splits.counts(), len(labels), ", ".join(labels))
    return splits


def tokenize(frame: pd.DataFrame, tokenizer, max_length: int):
    """A `datasets.Dataset` with input_ids/attention_mask/labels and a `length` column; no padding."""
    import datasets

    ds = datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    ds = ds.map(encode, batched=True, remove_columns=["text"], desc="tokenizing")
    return ds.rename_column("label", "labels")
