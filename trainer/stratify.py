"""Stratified sampling (`data.max_rows`) and the stratified 80/10/10 split, without surprises.

Every class must reach every split, so a class needs `MIN_ROWS_PER_CLASS` rows. Classes with fewer are
an error that names them all (usually a typo'd label). The `max_rows` sample keeps at least that many
rows of every class: classes too small for their proportional share are taken at the minimum and the
rest of the budget is sampled stratified by scikit-learn, exactly as before when no class is small.
"""

from __future__ import annotations

import logging

import pandas as pd

from trainer.config import DataConfig
from trainer.errors import UserError

log = logging.getLogger(__name__)

MIN_ROWS_PER_CLASS = 3
"one row for each of train, validation and test"


def _names(labels, counts: pd.Series | None = None) -> str:
    items = [f"{name!r} ({int(counts[name])})" if counts is not None else repr(name) for name in labels]
    shown = ", ".join(items[:5])
    return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def check_class_sizes(labels: pd.Series, source: str) -> None:
    counts = labels.value_counts()
    rare = counts[counts < MIN_ROWS_PER_CLASS].sort_values()
    if len(rare):
        raise UserError(
            f"{source}: label{'s' if len(rare) > 1 else ''} {_names(rare.index, rare)} "
            f"{'have' if len(rare) > 1 else 'has'} fewer than {MIN_ROWS_PER_CLASS} rows; a stratified "
            "train/val/test split needs one in each: fix or remove those rows (a typo in the label?), "
            "add rows of that class, or give three split files"
        )


def stratified_sample(df: pd.DataFrame, max_rows: int, seed: int, source: str) -> pd.DataFrame:
    """At most `max_rows` rows, proportional per class, and never fewer than MIN_ROWS_PER_CLASS of one."""
    from sklearn.model_selection import train_test_split

    counts = df["label"].value_counts()
    floor = MIN_ROWS_PER_CLASS * len(counts)
    if max_rows < floor:
        raise UserError(
            f"{source}: data.max_rows={max_rows} cannot keep {MIN_ROWS_PER_CLASS} rows of each of the "
            f"{len(counts)} classes: set data.max_rows to at least {floor}, or null to keep every row"
        )
    small: set[str] = set()
    while True:  # shrinking the budget of the big classes can push another class below the minimum
        big = counts.drop(list(small))
        budget = max_rows - MIN_ROWS_PER_CLASS * len(small)
        share = big * budget / big.sum()
        newly = set(share[share < MIN_ROWS_PER_CLASS].index)
        if not newly:
            break
        small |= newly
    parts = [
        df[df["label"] == name].sample(n=MIN_ROWS_PER_CLASS, random_state=seed) for name in sorted(small)
    ]
    rest = df[df["label"].isin(big.index)]
    left_out = len(rest) - budget
    if left_out >= len(big):
        kept, _ = train_test_split(rest, train_size=budget, stratify=rest["label"], random_state=seed)
    elif left_out > 0:  # fewer rows to leave out than classes: stratifying them is moot
        kept = rest.drop(rest.sample(n=left_out, random_state=seed).index)
    else:
        kept = rest
    if small:
        log.info(
            "data.max_rows=%d: classes too small for a proportional share, kept %d rows of each: %s",
            max_rows,
            MIN_ROWS_PER_CLASS,
            _names(sorted(small), counts),
        )
    return pd.concat([kept, *parts])


def stratified_split(df: pd.DataFrame, cfg: DataConfig, seed: int, source: str, labels: list[str]):
    """train, val, test: test and validation sizes are absolute (10% of 300 rows is 30 rows in each)."""
    from sklearn.model_selection import train_test_split

    n_test, n_val = round(len(df) * cfg.test_size), round(len(df) * cfg.val_size)
    n_classes = len(labels)
    if min(n_test, n_val, len(df) - n_test - n_val) < n_classes:
        fix = "raise data.max_rows" if cfg.max_rows and cfg.max_rows <= len(df) else "use more rows"
        raise UserError(
            f"{source}: {len(df)} rows give a test split of {n_test} and a validation split of {n_val} "
            f"rows, fewer than the {n_classes} classes (each split needs one row of every class): {fix}, "
            "raise data.test_size / data.val_size, or give three split files"
        )
    try:
        rest, test = train_test_split(df, test_size=n_test, stratify=df["label"], random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=rest["label"], random_state=seed)
    except ValueError as exc:
        raise UserError(
            f"{source}: cannot split stratified ({exc}); use more rows of the small classes, smaller "
            "data.test_size / data.val_size, or three split files"
        ) from None
    absent = sorted(set(labels) - set(train["label"]))
    if absent:
        raise UserError(
            f"{source}: no training rows left for {_names(absent)} after the split: add rows of "
            "those classes or lower data.test_size / data.val_size"
        )
    return train, val, test
