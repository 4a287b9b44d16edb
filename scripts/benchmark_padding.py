"""Benchmark: this trainer (dynamic padding + length-aware batches) vs the old way (every text padded
to max_length, random batches), same model, same data, same steps, side by side in one run.

    .venv/bin/python scripts/benchmark_padding.py [--rows 4000] [--epochs 1] [--max-length 128]
                                                  [--data file.csv] [--model name-or-folder]

Both arms start from the trainer's own `prepare` (data, tokenizer, seeded model), so they train the
same initial weights and differ only in padding and batching.

Prints train samples/second and test macro-F1 of both, and the speed ratio. Not a test: timings on a
shared machine are noisy, so both arms run back to back in one process and only the ratio is quoted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import Config, config_file, load_config  # noqa: E402
from trainer.data import tokenize  # noqa: E402
from trainer.errors import UserError  # noqa: E402
from trainer.precision import decide_precision, detect_device  # noqa: E402
from trainer.run import Prepared, prepare  # noqa: E402
from trainer.run_folder import RunFolder  # noqa: E402
from trainer.training import build_trainer, build_training_args, train_and_evaluate  # noqa: E402

ARMS = ("padded", "dynamic")


def padded_to_max(frame, tokenizer, max_length: int):
    """The old script: pad every text to max_length."""
    import datasets

    ds = datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
    ds = ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length, padding="max_length"),
        batched=True,
        remove_columns=["text"],
    )
    return ds.rename_column("label", "labels")


def arm_config(name: str, args: argparse.Namespace, workdir: Path) -> Config:
    """The local run config (config/local.yaml, paths relative to the repository root), with the
    benchmark's settings; the arms differ only in their batching."""
    overrides = {
        "data.max_rows": args.rows,
        "model.max_length": args.max_length,
        "train.epochs": args.epochs,
        "train.group_by_length": name == "dynamic",
        "train.eval_strategy": "epoch",
        "train.early_stopping.enabled": False,
        "runtime.output_dir": str(workdir / name),
    }
    if args.data:
        overrides["data.path"] = args.data
    if args.model:
        overrides["model.name"] = args.model
    return load_config(ROOT / config_file("local"), "local", overrides)


def prepare_arm(name: str, args: argparse.Namespace, workdir: Path) -> tuple[Config, Prepared]:
    """The trainer's own start of a run (data, tokenizer, seeded model): both arms start alike."""
    cfg = arm_config(name, args, workdir)
    return cfg, prepare(cfg)


def run_arm(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    cfg, prepared = prepare_arm(name, args, workdir)
    splits, tokenizer = prepared.splits, prepared.tokenizer
    folder = RunFolder(cfg.runtime.output_dir)
    device = detect_device()
    encode = tokenize if name == "dynamic" else padded_to_max
    data = prepared.encoded(cfg.model.max_length, encode)
    tokens = sum(len(ids) for ids in data["train"]["input_ids"])
    train_args = build_training_args(
        cfg, decide_precision(cfg.train.precision, device), device, folder.checkpoints_dir
    )
    train_args.disable_tqdm = True
    trainer = build_trainer(cfg, prepared.model, tokenizer, data, train_args, device, folder.tensorboard_dir)
    outcome = train_and_evaluate(trainer, splits.labels, data, None)
    return {
        "model": cfg.model.name,
        "samples_per_second": outcome.train_metrics["train_samples_per_second"],
        "train_seconds": outcome.train_metrics["train_runtime"],
        "test_f1_macro": outcome.test_report["f1_macro"],
        "mean_tokens_per_text": tokens / len(data["train"]),
        "train_rows": len(data["train"]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="CSV or other data file (default: config/local.yaml's data.path)")
    parser.add_argument("--model", help="model.name (default: config/local.yaml's, MiniLM-L6)")
    parser.add_argument(
        "--rows", type=int, default=4000, help="stratified sample size (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128, help="truncation / old-way padding length")
    args = parser.parse_args(argv)
    if args.data:
        args.data = str(Path(args.data).resolve())  # relative to where the user is, not to ROOT
    return args


def main() -> int:
    args = parse_args()
    os.chdir(ROOT)  # the local config's relative paths (data/demo/..., runs/...) are the repository's
    logging.basicConfig(level=logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {arm: run_arm(arm, args, Path(tmp)) for arm in ARMS}
    except UserError as exc:
        sys.stderr.write(f"benchmark: error: {exc}\n")
        return 2
    print(
        f"\n{results['dynamic']['model']} on {results['dynamic']['train_rows']} training texts, "
        f"{args.epochs:g} epoch(s), max_length {args.max_length}, device {detect_device().kind}"
    )
    print(f"{'':28}{'padded to max_length':>22}{'dynamic + by length':>22}")
    for key, fmt in [
        ("samples_per_second", "{:.1f}"),
        ("train_seconds", "{:.1f}"),
        ("mean_tokens_per_text", "{:.1f}"),
        ("test_f1_macro", "{:.4f}"),
    ]:
        print(f"{key:28}{fmt.format(results['padded'][key]):>22}{fmt.format(results['dynamic'][key]):>22}")
    ratio = results["dynamic"]["samples_per_second"] / results["padded"]["samples_per_second"]
    delta = results["dynamic"]["test_f1_macro"] - results["padded"]["test_f1_macro"]
    print(f"speed-up: {ratio:.2f}x train samples/second; test macro-F1 difference {delta:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
