"""Benchmark: inference formats side by side on one finished run's own test split, in one process.

    .venv/bin/python -m benchmarks.inference --run runs/local [--arms padded pytorch int8 onnx]
                                             [--batches 1 8 32 128] [--latency-texts 500] [--repeats 1]
                                             [--json results.json]

Arms (README "Speed"): `padded` (the run's fp32 PyTorch model, every text padded to model.max_length: the
first predictor, the baseline), `pytorch` (fp32, each batch padded to its longest text, longest texts
batched together: `predict` without an export), `int8` (PyTorch's dynamic int8 quantization of the
Linear layers, torch.ao.quantization.quantize_dynamic), `onnx` (torch.onnx's dynamo export, run by ONNX
Runtime on the CPU). int8 and onnx are made here in a temporary folder by the code `make export` runs
(trainer.export), never in the run folder. Every arm uses the same tokenizer, texts and thread count.

For each arm: single-text latency p50/p95/p99 (one `predict([text])` call per test text, after warm-up;
tokenizing included, as a caller sees it), throughput in texts/s at each batch size (the whole test
split through `predict(texts, batch_size)`), size on disk, test macro-F1 (from the batch-32 pass) and
its difference from the pytorch arm. The header says the device, CPU, threads, runtimes and precision.
Not a test: on a shared machine timings are noisy, so the arms run back to back (and with --repeats
interleaved, the best pass of each kept) and ratios are quoted.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

from trainer import inference
from trainer.errors import UserError, report
from trainer.export import (
    engine_for,
    macro_f1,
    percentile,
    single_latencies,
    size_on_disk,
    test_split,
    write_format,
)
from trainer.predict import Predictor
from trainer.run_folder import RunFolder

ARMS = ("padded", "pytorch", "int8", "onnx")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", default="runs/local", help="finished run folder (default runs/local)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--latency-texts", type=int, default=500, help="test texts timed one at a time")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the arms (best kept)")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def arms(folder: RunFolder, wanted: list[str], workdir: Path) -> dict[str, tuple[Predictor, int]]:
    """(predictor, bytes on disk) per arm."""
    fp32 = Predictor.load(folder.path, inference.PYTORCH)
    weights = size_on_disk(folder.model_dir / "model.safetensors")
    out: dict[str, tuple[Predictor, int]] = {}
    for arm in wanted:
        if arm == "padded":
            padded = Predictor(fp32.engine, fp32.tokenizer, fp32.labels, fp32.max_length, pad_to_max=True)
            out[arm] = (padded, weights)
        elif arm == "pytorch":
            out[arm] = (fp32, weights)
        else:
            target = workdir / arm
            target.mkdir()
            path = write_format(arm, fp32, target)
            out[arm] = (engine_for(arm, fp32, path), size_on_disk(path))
    return out


def measure(predictor: Predictor, texts: list[str], labels: list[int], args) -> dict:
    timed = [t for t in texts if t.strip()][: args.latency_texts]
    lat = single_latencies(predictor.probabilities, timed)
    row = {f"p{q}_ms": round(percentile(lat, q) * 1000, 2) for q in (50, 95, 99)}
    for batch in args.batches:
        predictor.predict(texts[: batch * 2], batch_size=batch)  # warm-up at this shape
        start = time.perf_counter()
        predictor.predict(texts, batch_size=batch)
        row[f"batch{batch}_texts_per_s"] = round(len(texts) / (time.perf_counter() - start), 1)
    row["test_f1_macro"] = round(macro_f1(predictor, texts, labels, batch_size=32), 4)
    return row


def best(a: dict, b: dict) -> dict:
    """Per figure the better of two passes (lower latency, higher throughput); F1 is the same in both."""
    return {k: (min(a[k], b[k]) if k.endswith("_ms") else max(a[k], b[k])) for k in a}


def table(rows: list[dict], batches: list[int]) -> str:
    base = next((r for r in rows if r["arm"] == "pytorch"), rows[0])
    head = ["arm", "format", "precision", "p50 ms", "p95 ms", "p99 ms"]
    head += [f"batch {b} texts/s" for b in batches]
    head += ["x pytorch (p50 / batch 32)", "size MB", "test macro-F1", "F1 vs pytorch"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        ratio = f"{base['p50_ms'] / r['p50_ms']:.2f} / " + (
            f"{r['batch32_texts_per_s'] / base['batch32_texts_per_s']:.2f}" if 32 in batches else "-"
        )
        cells = [r["arm"], r["format"], r["precision"], r["p50_ms"], r["p95_ms"], r["p99_ms"]]
        cells += [r[f"batch{b}_texts_per_s"] for b in batches]
        cells += [ratio, f"{r['bytes'] / 1e6:.1f}", f"{r['test_f1_macro']:.4f}"]
        cells += [f"{r['test_f1_macro'] - base['test_f1_macro']:+.4f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        folder = RunFolder(args.run)
        texts, labels = test_split(folder)
        with tempfile.TemporaryDirectory() as tmp:
            made = arms(folder, args.arms, Path(tmp))
            import onnxruntime
            import torch

            print(
                f"run {folder.path}: {len(texts)} test texts, max_length {made[args.arms[0]][0].max_length}; "
                f"device cpu ({cpu_name()}), {inference.threads()} threads; torch {torch.__version__}, "
                f"onnxruntime {onnxruntime.__version__}, opset {inference.ONNX_OPSET}; "
                f"python {platform.python_version()}"
            )
            results: dict[str, dict] = {}
            for _ in range(args.repeats):
                for arm, (predictor, _size) in made.items():
                    row = measure(predictor, texts, labels, args)
                    results[arm] = best(results[arm], row) if arm in results else row
            rows = []
            for arm, (predictor, size) in made.items():
                precision = inference.PRECISION[predictor.format]
                rows.append(
                    {"arm": arm, "format": predictor.engine.runtime, "precision": precision, "bytes": size}
                    | results[arm]
                )
    except UserError as exc:
        return report(str(exc))
    print(table(rows, args.batches))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
