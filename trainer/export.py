"""Export a finished run's model to a faster format: `python -m trainer.export --run runs/local`.

Writes `<run>/export/<format>/` (an int8 PyTorch state dict or an ONNX file, trainer.inference) beside
the run's own model/, which it never touches: the new folder is written under a temporary name and
renamed into place. Then it measures the export against the run's fp32 PyTorch model side by side on the
run's own test split (the data file and seed of its resolved config): macro-F1, single-text p50 latency,
size on disk; and records format, opset, runtime and those figures in the manifest's "exports" entry.
The export becomes the run's default (what `predict` and `serve` load) only when it is faster than fp32
and loses at most MAX_F1_LOSS macro-F1; otherwise it is kept for `--format` and says why not.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer import inference
from trainer.errors import OneLineParser, UserError, report
from trainer.lock import RunLock
from trainer.run_folder import RunFolder

MAX_F1_LOSS = 0.005
"a format that loses more macro-F1 than this against fp32 on the test split is never the default"
LATENCY_TEXTS = 200
"single-text latency is measured on the first this many test texts"


# ------------------------------------------------------------------ measuring (shared with the benchmark)


def test_split(folder: RunFolder) -> tuple[list[str], list[int]]:
    """The run's own test split (texts, label ids): its resolved config's data and seed, refused when the
    data file is not the one the run trained on (its sha256 in the manifest) or the labels differ."""
    from trainer.data import load_splits

    cfg = folder.resolved_config()
    try:
        splits = load_splits(cfg.data, cfg.train.seed)
    except UserError as exc:
        raise UserError(f"the run's test split is needed to measure the export: {exc}") from None
    trained = [s.get("sha256") for s in folder.manifest().get("data", {}).get("sources", [])]
    found = [s.get("sha256") for s in splits.sources]
    if trained and found != trained:
        raise UserError(
            f"{cfg.data.path or cfg.data.test_path} is not the file {folder.path} trained on (its sha256 "
            "differs from the manifest's): put the run's data back to measure on its own test split"
        )
    if splits.labels != folder.labels():
        raise UserError(
            f"the data's labels {splits.labels} are not the run's {folder.labels()}: the test split cannot "
            "be scored"
        )
    return list(splits.test["text"]), [int(y) for y in splits.test["label"]]


def macro_f1(predictor: Any, texts: list[str], labels: list[int], batch_size: int = 32) -> float:
    from sklearn.metrics import f1_score

    ids = {name: i for i, name in enumerate(predictor.labels)}
    rows = predictor.predict(texts, batch_size=batch_size)
    predicted = [ids[row["label"]] if row["label"] is not None else -1 for row in rows]
    return float(f1_score(labels, predicted, average="macro", labels=list(range(len(ids)))))


def single_latencies(predict: Callable[[list[str]], Any], texts: list[str], warmup: int = 5) -> list[float]:
    """Seconds per call of `predict([text])`, one text at a time, after a few warm-up calls."""
    for text in texts[:warmup]:
        predict([text])
    out = []
    for text in texts:
        start = time.perf_counter()
        predict([text])
        out.append(time.perf_counter() - start)
    return out


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------ writing an export


def write_format(fmt: str, fp32: Any, target: Path) -> Path:
    """Write format `fmt` of the fp32 predictor's model into the folder `target`; returns the file."""
    path = target / inference.FILES[fmt]
    if fmt == inference.INT8:
        inference.save_int8(fp32.engine.model, path)
    else:
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
        except ImportError:
            raise UserError("the ONNX exporter is not installed (the export extra): run make setup") from None
        inference.export_onnx(fp32.engine.model, fp32.tokenizer, path)
    return path


def engine_for(fmt: str, fp32: Any, path: Path) -> Any:
    from trainer.predict import Predictor, _load_onnx

    if fmt == inference.INT8:
        engine = inference.TorchEngine(inference.load_int8(fp32.engine.model, path), fmt)
    else:
        engine = _load_onnx(path)
    return Predictor(engine, fp32.tokenizer, fp32.labels, fp32.max_length, source=str(path))


def export(run_dir: str | Path, fmt: str, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, measure, move into place, record. Returns the manifest record."""
    from trainer.predict import Predictor, refuse_model_folder

    folder = RunFolder(run_dir)
    refuse_model_folder(folder)
    folder.manifest()  # a finished run, or one line saying why not
    with RunLock(folder.path) as lock:
        lock.acquire()
        fp32 = Predictor.load(folder.path, inference.PYTORCH)
        texts, labels = test_split(folder)
        final = folder.export_dir(fmt)
        final.parent.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=final.parent))
        staging.chmod(0o755)  # readable like model/ (a server in a container may run as another user)
        try:
            say(f"export: writing {fmt} for {folder.path} ({len(texts)} test texts to measure on)")
            path = write_format(fmt, fp32, staging)
            candidate = engine_for(fmt, fp32, path)
            entry = measure(fmt, fp32, candidate, texts, labels)
            entry["path"] = str(Path(final.relative_to(folder.path)) / path.name)
            entry["bytes"] = size_on_disk(path)
            entry["pytorch_bytes"] = size_on_disk(folder.model_dir / "model.safetensors")
            _replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        folder.record_export(fmt, entry)
    say(summary(fmt, entry))
    return entry


def measure(fmt: str, fp32: Any, candidate: Any, texts: list[str], labels: list[int]) -> dict[str, Any]:
    import torch

    f1 = macro_f1(candidate, texts, labels)
    f1_fp32 = macro_f1(fp32, texts, labels)
    sample = [t for t in texts if t.strip()][:LATENCY_TEXTS]
    p50 = percentile(single_latencies(candidate.probabilities, sample), 50)
    p50_fp32 = percentile(single_latencies(fp32.probabilities, sample), 50)
    default, why = decide(f1_fp32 - f1, p50, p50_fp32)
    return {
        "format": fmt,
        "precision": inference.PRECISION[fmt],
        "opset": inference.ONNX_OPSET if fmt == inference.ONNX else None,
        "runtime": candidate.engine.runtime,
        "exporter": f"torch.onnx (dynamo) {torch.__version__}"
        if fmt == inference.ONNX
        else f"torch.ao.quantization.quantize_dynamic {torch.__version__}",
        "threads": inference.threads(),
        "test_texts": len(texts),
        "test_f1_macro": round(f1, 6),
        "pytorch_test_f1_macro": round(f1_fp32, 6),
        "p50_ms": round(p50 * 1000, 3),
        "pytorch_p50_ms": round(p50_fp32 * 1000, 3),
        "latency_texts": len(sample),
        "default": default,
        "why": why,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def decide(f1_loss: float, p50: float, fp32_p50: float) -> tuple[bool, str]:
    """(default?, why): the run's default only when faster than fp32 and at most MAX_F1_LOSS below it."""
    if f1_loss > MAX_F1_LOSS + 1e-12:
        return False, f"loses {f1_loss:.4f} macro-F1 (more than {MAX_F1_LOSS})"
    if p50 >= fp32_p50:
        return False, "not faster than fp32 here"
    return True, "faster than fp32 at the same macro-F1"


def _replace(staging: Path, final: Path) -> None:
    """Put the staged folder at `final`; an older export there is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old)


def summary(fmt: str, e: dict[str, Any]) -> str:
    verdict = "the run's default now" if e["default"] else f"kept, not the default: {e['why']}"
    return (
        f"exported {fmt} to {e['path']} ({e['bytes'] / 1e6:.1f} MB vs {e['pytorch_bytes'] / 1e6:.1f} MB): "
        f"test macro-F1 {e['test_f1_macro']:.4f} vs fp32 {e['pytorch_test_f1_macro']:.4f}, single-text p50 "
        f"{e['p50_ms']:.1f} ms vs {e['pytorch_p50_ms']:.1f} ms ({e['threads']} threads): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m trainer.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="finished run folder (e.g. runs/local)")
    parser.add_argument(
        "--format", choices=inference.EXPORTED, default=inference.ONNX, help="what to write (default: onnx)"
    )
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        export(args.run, args.format)
    except UserError as exc:
        return report(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
