"""benchmarks/gpu_check.py's pure parts (the script itself needs a CUDA GPU): its arms per device, the cloud
config's shape, the table row with the fraction of peak."""

from __future__ import annotations

import importlib

from tests.support import ROOT
from trainer.precision import DeviceInfo


def load_gpu_check():
    return importlib.import_module("benchmarks.gpu_check")


def test_arms_cover_precision_optimizer_and_attention():
    check = load_gpu_check()
    t4 = DeviceInfo("cuda", "Tesla T4", (7, 5), 1)
    names = [arm.name for arm in check.arms(t4)]
    assert names == [
        "fp16, fused AdamW, sdpa",
        "fp16, fused AdamW, eager",
        "fp16, plain AdamW, sdpa",
        "fp16, plain AdamW, eager",
        "fp32, fused AdamW, sdpa",
    ]
    assert check.arms(DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 1))[0].precision == "bf16"


def test_cloud_shape_and_row():
    check = load_gpu_check()
    assert check.cloud_shape() == (64, 256)
    arm = check.Arm("fp16", True, "sdpa")
    assert check.row(arm, 500.0, 13.0, "Tesla T4").endswith("13.00 TFLOP/s  20.0% of peak")
    assert check.row(arm, 500.0, 13.0, "Some GPU").endswith("peak unknown")


def test_batching_arms_are_valid_configs_at_the_cloud_batch_size():
    """Step 4's flags resolve to real configs: random, megabatch, packed (whole batches), and split into
    1-4 micro-batches."""
    from trainer.cli import build_parser, overrides_from_args
    from trainer.config import config_file, load_config

    check = load_gpu_check()
    seen = {}
    for name, flags in check.BATCHINGS.items():
        args = build_parser().parse_args(["--batch-size", "64", *flags])
        cfg = load_config(ROOT / config_file("local"), "local", overrides_from_args(args))
        seen[name] = cfg.train.micro_batches()
    assert seen == {
        "random": (64, 1),
        "megabatch": (64, 1),
        "packed": (64, 1),
        "split, micro-batch 16": (16, 4),
        "split, micro-batch 32": (32, 2),
        "split, micro-batch 64": (64, 1),
    }
