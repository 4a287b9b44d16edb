"""Data: read CSV / JSONL / Parquet / a `save_to_disk` folder, clean, map labels, split, tokenize.

Every problem in the data is found here, before the output folder is touched, and reported in one line
that names the file, the line (row) or the class, and the fix: the rows by `trainer.cleaning`, the
class sizes and the stratified sample and split by `trainer.stratify`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.cleaning import READERS, Source, clean, sort_labels
from trainer.config import DataConfig
from trainer.errors import UserError
from trainer.stratify import check_class_sizes, stratified_sample, stratified_split

log = logging.getLogger(__name__)


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
            # pandas renames a repeated name ("text" -> "text.1"): only the header line shows it.
            _refuse_duplicate_columns(_csv_header(path, sep), path)
            return pd.read_csv(path, sep=sep, encoding="utf-8", low_memory=False)
        if kind == "jsonl":
            _refuse_duplicate_keys(path)
            # dtype=False: JSON strings stay strings ("2020" is a text, not a number).
            return pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        import pyarrow.parquet as pq

        _refuse_duplicate_columns(pq.read_schema(path).names, path)
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


def _refuse_duplicate_columns(names: list[str], path: Path) -> None:
    """A column name given twice is ambiguous (pandas renames the second "text.1" and uses the first):
    one line naming the file, the names and their positions."""
    named = [str(name) for name in names if str(name).strip()]  # empty names (trailing commas) name nothing
    repeated = sorted({name for name in named if named.count(name) > 1}, key=named.index)
    if not repeated:
        return
    listed = ", ".join(
        f"{name!r} (columns {', '.join(str(i) for i, n in enumerate(names, 1) if str(n) == name)})"
        for name in repeated
    )
    raise UserError(
        f"data file {path} has duplicated column names: {listed}; rename or delete the extra "
        "columns so that each name appears once in the header"
    )


def _csv_header(path: Path, sep: str) -> list[str]:
    """The header line's names as written (the first non-blank record, as pandas reads it)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        try:
            for record in csv.reader(fh, delimiter=sep):
                if record and not (len(record) == 1 and not record[0].strip()):
                    return record
        except csv.Error:
            pass  # pandas reports the malformed line in its own words
    return []


class _Pairs(list):
    "one JSON object's (key, value) pairs, in order, repeated keys kept"


def _refuse_duplicate_keys(path: Path) -> None:
    """A key given twice in one JSON record: JSON keeps the last value, silently."""
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_Pairs)
            except ValueError:
                return  # pandas reports the broken line in its own words
            keys = [key for key, _ in record] if isinstance(record, _Pairs) else []
            repeated = sorted({key for key in keys if keys.count(key) > 1}, key=keys.index)
            if repeated:
                which = (
                    f"keys {', '.join(map(repr, repeated))} appear"
                    if len(repeated) > 1
                    else (f"key {repeated[0]!r} appears")
                )
                raise UserError(
                    f"data file {path} line {number}: {which} more than once in the record (JSON keeps only "
                    "the last value, silently): delete or rename the extra key"
                )


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
# Splits


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.path:
        return _single_file(cfg, seed)
    return _three_files(cfg)


def _single_file(cfg: DataConfig, seed: int) -> Splits:
    path = str(cfg.path)
    source = Source(path, local_path(path))
    raw = read_table(source.local)
    df, dropped = clean(raw, cfg, source)
    labels = sort_labels(set(df["label"]))
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
        frames[split], dropped = clean(raw, cfg, source)
        sources.append(
            {
                "split": split,
                "path": str(path),
                "sha256": file_sha256(source.local),
                "rows": len(raw),
                "dropped": dropped,
            }
        )
    labels = sort_labels(set(frames["train"]["label"]))
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
