"""Cleaning: one frame of (text, label) strings from a table as read, or one line naming the row and the fix.

Rows with an empty or missing text or label (after stripping whitespace) are dropped and counted, and
the log names their lines; everything else that looks wrong is an error naming the file and the line
(row) as the user sees it: a header line repeated inside the data, values that are not texts,
fractional labels, no usable row at all.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.config import DataConfig
from trainer.errors import UserError

log = logging.getLogger(__name__)

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
"file extension -> reader (a folder is a datasets save_to_disk folder)"
SHOWN_ROWS = 3
"how many row numbers a message lists before saying how many more"


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


def clean(df: pd.DataFrame, cfg: DataConfig, source: Source) -> tuple[pd.DataFrame, int]:
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


def sort_labels(values: set[str]) -> list[str]:
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)
