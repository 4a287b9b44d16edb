"""GPU check (not a test: CI has no GPU). Run on a machine with a CUDA GPU after `make setup data`:

    .venv/bin/python scripts/gpu_check.py [--rows 4000]

1. prints the device description and the precision policy's decision for auto/fp16/bf16;
2. trains MiniLM-L6 on the demo tweets twice, side by side: precision auto (fp16 on a T4, bf16 on
   compute capability >= 8) and fp32, both with runtime.require_gpu=true (the GPU check lets a real GPU
   through); prints samples/second, the ratio and test macro-F1, and checks that each manifest records
   the precision that really ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.cli import main as trainer_main  # noqa: E402
from trainer.errors import UserError  # noqa: E402
from trainer.precision import decide_precision, detect_device  # noqa: E402
from trainer.run_folder import RunFolder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
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
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("auto", "fp32"):
            out = Path(tmp) / precision
            code = trainer_main([
                "--mode", "local", "--output-dir", str(out), "--epochs", "1",
                "--set", f"data.max_rows={args.rows}", "--set", f"train.precision={precision}",
                "--set", "runtime.require_gpu=true",
            ])  # fmt: skip
            if code != 0:
                return code
            results[precision] = RunFolder(out).manifest()
    expected = decide_precision("auto", device).precision
    auto, fp32 = results["auto"], results["fp32"]
    ok = auto["precision"] == expected and fp32["precision"] == "fp32"
    ratio = auto["timing"]["train_samples_per_second"] / fp32["timing"]["train_samples_per_second"]
    verdict = "OK" if ok else "WRONG"
    print(f"\n{device.name}: auto trained in {auto['precision']} (expected {expected}), manifest {verdict}")
    for name, m in results.items():
        speed = m["timing"]["train_samples_per_second"]
        print(f"  {name:>4}: {speed:.1f} samples/s, test macro-F1 {m['test_f1_macro']:.4f}")
    print(f"  mixed-precision speed-up over fp32: {ratio:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
