"""The device policy: the precision table and runtime.require_gpu, pure functions of a device description
(tests hand in CPU and GPU descriptions; benchmarks/gpu_check.py checks a real GPU)."""

from __future__ import annotations

import json

import pytest

from tests.support import ROOT
from trainer.cli import main
from trainer.config import load_config
from trainer.errors import UserError
from trainer.precision import DeviceInfo, check_gpu, decide_precision

CPU = DeviceInfo("cpu")
AMX = DeviceInfo("cpu", bf16_matrix_units=True)
T4 = DeviceInfo("cuda", "Tesla T4", (7, 5), 1)
V100 = DeviceInfo("cuda", "Tesla V100-SXM2-16GB", (7, 0), 1)
A100 = DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB", (8, 0), 1)
H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 1)
P100 = DeviceInfo("cuda", "Tesla P100-PCIE-16GB", (6, 0), 1)


@pytest.mark.parametrize(
    ("requested", "device", "expected", "warns"),
    [
        ("auto", CPU, "fp32", False),
        ("fp32", CPU, "fp32", False),
        ("fp16", CPU, "fp32", True),
        ("bf16", CPU, "fp32", True),
        ("auto", AMX, "bf16", False),
        ("bf16", AMX, "bf16", False),
        ("fp16", AMX, "fp32", True),
        ("fp32", AMX, "fp32", False),
        ("auto", T4, "fp16", False),
        ("fp16", T4, "fp16", False),
        ("fp32", T4, "fp32", False),
        ("auto", V100, "fp16", False),
        ("auto", A100, "bf16", False),
        ("auto", H100, "bf16", False),
        ("bf16", H100, "bf16", False),
        ("fp16", A100, "fp16", False),
        ("auto", P100, "fp32", False),
    ],
)
def test_policy_table(requested, device, expected, warns):
    decision = decide_precision(requested, device)
    assert decision.precision == expected
    assert (decision.warning is not None) == warns
    assert decision.fp16 == (expected == "fp16") and decision.bf16 == (expected == "bf16")


def test_fp16_on_cpu_warning_says_fp32():
    decision = decide_precision("fp16", CPU)
    assert "fp32" in decision.warning and decision.precision == "fp32"
    assert "without bf16 matrix units (AMX)" in decide_precision("bf16", CPU).warning


@pytest.mark.parametrize("device", [T4, V100, P100], ids=lambda d: d.name)
def test_bf16_refused_without_bf16_hardware(device):
    with pytest.raises(UserError, match=r"bf16 is not supported on .*use --set train\.precision=fp16"):
        decide_precision("bf16", device)


def test_amx_is_read_from_the_cpu_flags(monkeypatch):
    import torch

    from trainer import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_tile", "amx_bf16"})
    assert precision.detect_device() == AMX
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert precision.detect_device() == CPU


def test_fp16_request_on_cpu_trains_and_records_fp32(tmp_path, tiny_config_file):
    out = tmp_path / "fp16-on-cpu"
    assert main(["--config", str(tiny_config_file), "--fp16", "--epochs", "1", "--output-dir", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "fp32"
    assert "fp16 requested on CPU" in manifest["precision_reason"]
    assert "training in fp32 instead" in (out / "training.log").read_text()


# ---------------------------------------------------------------- runtime.require_gpu


def test_a_run_that_requires_a_gpu_and_has_none_stops_before_the_output_folder(
    tmp_path, tiny_config_file, capsys
):
    out = tmp_path / "needs-gpu"
    argv = ["--config", str(tiny_config_file), "--output-dir", str(out), "--set", "runtime.require_gpu=true"]
    assert main(argv, device=CPU) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("trainer: error: runtime.require_gpu is true but no CUDA GPU is visible")
    assert "`nvidia-smi`" in err[0] and "docker run --rm --gpus all" in err[0]
    assert "torch.cuda.is_available()" in err[0] and "runtime.require_gpu=false" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(("required", "device"), [(True, T4), (True, H100), (False, CPU), (False, T4)])
def test_require_gpu_lets_through_what_it_should(required, device):
    check_gpu(required, device)


def test_the_cloud_run_requires_a_gpu_and_the_local_run_does_not(monkeypatch):
    monkeypatch.setenv("TRAINER_BUCKET", "gs://my-bucket")
    assert load_config(ROOT / "config/cloud.yaml", "cloud").runtime.require_gpu is True
    assert load_config(ROOT / "config/local.yaml", "local").runtime.require_gpu is False
    assert load_config(None, "local").runtime.require_gpu is False
