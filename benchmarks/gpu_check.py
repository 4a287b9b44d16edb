"""GPU check (not a test: CI has no GPU). Run on a machine with a CUDA GPU after `make setup data`:

    .venv/bin/python -m benchmarks.gpu_check [--rows 4000] [--steps 30] [--model distilbert-base-uncased]

1. prints the device description and the precision policy's decision for auto/fp16/bf16;
2. trains MiniLM-L6 on the demo tweets twice through the trainer, side by side: precision auto (fp16 on
   a T4, bf16 on compute capability >= 8) and fp32, both with runtime.require_gpu=true; prints samples/s,
   achieved TFLOP/s and fraction of peak from each manifest, and checks that each manifest records the
   precision that really ran;
3. times training steps of DistilBERT at the cloud config (config/cloud.yaml: batch 64, max length 256)
   for each arm of ARMS: precision (auto's mixed precision vs fp32), fused vs plain AdamW, and SDPA vs
   eager attention; prints samples/s, TFLOP/s and the fraction of the GPU's dense peak (trainer.flops).
   Without --model the DistilBERT is built from its configuration with random weights (no download; the
   FLOPs and the speed are those of the pretrained model);
4. trains MiniLM-L6 on the demo tweets through the trainer at the cloud batch size (64) with each
   batching of BATCHINGS (random, HF's megabatch, packed, split into micro-batches of 16, 32 and 64 =
   unsplit length-sorted) and prints samples/s and test macro-F1: the figures that set config/cloud.yaml's
   train.batching and train.micro_batch_size on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from trainer.cli import main as trainer_main  # noqa: E402
from trainer.config import config_file, load_config  # noqa: E402
from trainer.errors import UserError  # noqa: E402
from trainer.flops import fraction_of_peak, training_flops_per_token  # noqa: E402
from trainer.precision import DeviceInfo, decide_precision, detect_device  # noqa: E402
from trainer.run_folder import RunFolder  # noqa: E402


@dataclass(frozen=True)
class Arm:
    precision: str
    "fp32, fp16 or bf16"
    fused_adamw: bool
    attention: str
    "sdpa or eager (transformers' attn_implementation)"

    @property
    def name(self) -> str:
        return f"{self.precision}, {'fused' if self.fused_adamw else 'plain'} AdamW, {self.attention}"


def arms(device: DeviceInfo) -> list[Arm]:
    """Mixed precision (what auto picks) with every optimizer/attention pair, then fp32 as it ships."""
    mixed = decide_precision("auto", device).precision
    out = [Arm(mixed, fused, attn) for fused in (True, False) for attn in ("sdpa", "eager")]
    return [*out, Arm("fp32", True, "sdpa")]


def cloud_shape() -> tuple[int, int]:
    """Batch size and sequence length of the cloud config (config/cloud.yaml)."""
    cfg = load_config(ROOT / config_file("cloud"), "cloud", {"runtime.bucket": None})
    return cfg.train.batch_size, cfg.model.max_length


def row(arm: Arm, samples_per_second: float, tflops: float, device_name: str) -> str:
    """One line of the step-timing table."""
    fraction = fraction_of_peak(tflops, device_name, arm.precision)
    peak = f"{fraction:.1%} of peak" if fraction is not None else "peak unknown"
    return f"  {arm.name:<32} {samples_per_second:8.1f} samples/s {tflops:8.2f} TFLOP/s  {peak}"


def time_arm(arm: Arm, model_name: str | None, batch: int, length: int, steps: int) -> tuple[float, float]:
    """Samples/s and TFLOP/s of `steps` training steps (after 3 warm-up steps) on random token ids, every
    position real (no padding), so every token counts."""
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertConfig

    kwargs = {"attn_implementation": arm.attention, "num_labels": 3}
    if model_name:
        model = AutoModelForSequenceClassification.from_pretrained(model_name, **kwargs)
    else:
        model = AutoModelForSequenceClassification.from_config(DistilBertConfig(**kwargs))
    model.cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=arm.fused_adamw)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(arm.precision)
    scaler = torch.amp.GradScaler(enabled=arm.precision == "fp16")
    ids = torch.randint(1000, model.config.vocab_size, (batch, length), device="cuda")
    labels = torch.randint(0, 3, (batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_second = batch * length * steps / seconds
    return batch * steps / seconds, training_flops_per_token(model.config, length) * tokens_per_second / 1e12


def trainer_runs(device: DeviceInfo, rows: int) -> bool:
    """Step 2: auto vs fp32 through the trainer; True when both manifests record the right precision."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("auto", "fp32"):
            out = Path(tmp) / precision
            code = trainer_main([
                "--mode", "local", "--output-dir", str(out), "--epochs", "1",
                "--set", f"data.max_rows={rows}", "--set", f"train.precision={precision}",
                "--set", "runtime.require_gpu=true",
            ])  # fmt: skip
            if code != 0:
                return False
            results[precision] = RunFolder(out).manifest()
    expected = decide_precision("auto", device).precision
    auto, fp32 = results["auto"], results["fp32"]
    ok = auto["precision"] == expected and fp32["precision"] == "fp32"
    verdict = "OK" if ok else "WRONG"
    print(f"\n{device.name}: auto trained in {auto['precision']} (expected {expected}), manifest {verdict}")
    for name, m in results.items():
        use = m["hardware_use"]
        print(
            f"  {name:>4}: {m['timing']['train_samples_per_second']:.1f} samples/s, "
            f"{use['train_tflops']:.2f} TFLOP/s, fraction of peak {use['fraction_of_peak']}, "
            f"test macro-F1 {m['test_f1_macro']:.4f}"
        )
    ratio = auto["timing"]["train_samples_per_second"] / fp32["timing"]["train_samples_per_second"]
    print(f"  mixed-precision speed-up over fp32: {ratio:.2f}x")
    return ok


BATCHINGS = {
    "random": ["--set", "train.group_by_length=false"],
    "megabatch": ["--set", "train.batching=megabatch"],
    "packed": ["--set", "train.batching=packed"],
    **{
        f"split, micro-batch {m}": ["--set", "train.batching=split", "--set", f"train.micro_batch_size={m}"]
        for m in (16, 32, 64)
    },
}


def batching_runs(rows: int) -> None:
    """Step 4: the batchings side by side through the trainer at batch 64, precision auto."""
    print("\nMiniLM-L6 on the demo tweets, batch 64, precision auto, 1 epoch, per batching:")
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in BATCHINGS.items():
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            code = trainer_main([
                "--mode", "local", "--output-dir", str(out), "--epochs", "1", "--batch-size", "64",
                "--set", f"data.max_rows={rows}", "--set", "runtime.require_gpu=true", *flags,
            ])  # fmt: skip
            if code != 0:
                print(f"  {name:<24} failed (exit {code})")
                continue
            m = RunFolder(out).manifest()
            print(
                f"  {name:<24} {m['timing']['train_samples_per_second']:8.1f} samples/s  "
                f"{m['hardware_use']['train_tflops']:.2f} TFLOP/s  test macro-F1 {m['test_f1_macro']:.4f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=30, help="timed DistilBERT steps per arm")
    parser.add_argument("--model", help="a DistilBERT to load (default: built from its configuration)")
    args = parser.parse_args()
    os.chdir(ROOT)  # config/local.yaml and its data path are the repository's, as for `make train`
    device = detect_device()
    print(f"device: {device}")
    if not device.is_cuda:
        print("no CUDA GPU visible: nothing to check here")
        return 1
    for asked in ("auto", "fp16", "bf16"):
        try:
            print(f"  {asked:>4} -> {decide_precision(asked, device).precision}")
        except UserError as exc:
            print(f"  {asked:>4} -> refused: {exc}")
    ok = trainer_runs(device, args.rows)
    batch, length = cloud_shape()
    print(f"\nDistilBERT training steps at the cloud config (batch {batch}, length {length}):")
    for arm in arms(device):
        samples, tflops = time_arm(arm, args.model, batch, length, args.steps)
        print(row(arm, samples, tflops, device.name))
    batching_runs(args.rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
