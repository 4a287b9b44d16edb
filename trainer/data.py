"""Data: read CSV / JSONL / Parquet / a `save_to_disk` folder, clean, map labels, split, tokenize."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.config import DataConfig
from trainer.errors import UserError

log = logging.getLogger(__name__)

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


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
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", encoding="utf-8")
        if kind == "jsonl":
            return pd.read_json(path, lines=True, encoding="utf-8")
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


def _clean(df: pd.DataFrame, cfg: DataConfig, source: str) -> tuple[pd.DataFrame, int]:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if missing:
        raise UserError(
            f"{source} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))}); "
            "set data.text_column / data.label_column"
        )
    out = df[[cfg.text_column, cfg.label_column]].rename(
        columns={cfg.text_column: "text", cfg.label_column: "label"}
    )
    text = out["text"].astype("string").str.strip()
    keep = text.notna() & (text != "") & out["label"].notna()
    dropped = int((~keep).sum())
    out = out.loc[keep].assign(text=text[keep].astype(str))
    if dropped:
        log.info("%s: dropped %d rows with an empty or missing text or label", source, dropped)
    out["label"] = out["label"].map(_label_str)
    return out.reset_index(drop=True), dropped


def _label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _sort_labels(values: set[str]) -> list[str]:
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.path:
        return _single_file(cfg, seed)
    return _three_files(cfg)


def _single_file(cfg: DataConfig, seed: int) -> Splits:
    from sklearn.model_selection import train_test_split

    path = str(cfg.path)
    local = local_path(path)
    raw = read_table(local)
    df, dropped = _clean(raw, cfg, path)
    labels = _sort_labels(set(df["label"]))
    _check_classes(labels, path)
    counts = df["label"].value_counts()
    if cfg.max_rows and len(df) > cfg.max_rows:
        df, _ = train_test_split(df, train_size=cfg.max_rows, stratify=df["label"], random_state=seed)
        log.info("data.max_rows=%d: kept a stratified sample of %d rows", cfg.max_rows, len(df))
        counts = df["label"].value_counts()
    rare = counts[counts < 3]
    if len(rare):
        raise UserError(
            f"{path}: label {rare.index[0]!r} has only {int(rare.iloc[0])} row(s); a stratified "
            "train/val/test split needs at least 3 per label"
        )
    try:
        # Absolute sizes: 10% of 300 rows is 30 rows in each held-out split, not 30 and 31.
        n_test, n_val = round(len(df) * cfg.test_size), round(len(df) * cfg.val_size)
        rest, test = train_test_split(df, test_size=n_test, stratify=df["label"], random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=rest["label"], random_state=seed)
    except ValueError as exc:
        raise UserError(
            f"{path}: cannot split stratified ({exc}); use more rows or three split files"
        ) from None
    source = {"path": path, "sha256": file_sha256(local), "rows": len(raw), "dropped": dropped}
    return _finish(train, val, test, labels, [source])


def _three_files(cfg: DataConfig) -> Splits:
    frames, sources = {}, []
    for split, path in (("train", cfg.train_path), ("val", cfg.val_path), ("test", cfg.test_path)):
        local = local_path(str(path))
        raw = read_table(local)
        frames[split], dropped = _clean(raw, cfg, str(path))
        if frames[split].empty:
            raise UserError(f"{path}: the {split} split has no usable rows")
        sources.append(
            {
                "split": split,
                "path": str(path),
                "sha256": file_sha256(local),
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
