"""Hardware use (trainer.flops): FLOPs per token from a model configuration, peaks per GPU and precision,
and what a finished run reports (manifest and final line) including where its time went."""

from __future__ import annotations

import json
import shlex

import pytest
from transformers import BertConfig, DistilBertConfig

from tests.support import ROOT
from trainer.cli import main
from trainer.flops import (
    fraction_of_peak,
    hardware_line,
    non_embedding_params,
    peak_tflops,
    training_flops_per_token,
)
from trainer.timing import PHASES


def test_bert_base_has_85m_non_embedding_parameters():
    bert = BertConfig()  # 12 layers, hidden 768, feed-forward 3072
    assert non_embedding_params(bert) == 84_934_656  # Kaplan et al.'s 12 n_layer d_model^2
    assert training_flops_per_token(bert, 128) == 6 * 84_934_656 + 6 * 12 * 128 * 768


def test_distilbert_is_half_of_bert_base():
    distil = DistilBertConfig()  # 6 layers, dim 768, hidden_dim 3072
    assert non_embedding_params(distil) == 84_934_656 // 2


def test_peaks_per_gpu_and_precision():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("Tesla T4", "fp16") == 65.0
    assert peak_tflops("Tesla T4", "bf16") is None  # the T4 has no bf16
    assert peak_tflops("NVIDIA L4", "fp32") == 30.3
    assert peak_tflops("cpu", "fp32") is None
    assert fraction_of_peak(31.2, "NVIDIA A100-SXM4-40GB", "bf16") == 0.1


@pytest.mark.parametrize(
    ("device", "peak"),
    [("NVIDIA L4", 121.0), ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA A100-SXM4-80GB", 312.0)],
)
def test_the_gpus_infra_makes_have_bf16_and_fp16_peaks(device, peak):
    """G2's L4 and A2's A100s (40GB and 80GB), as torch names them: dense tensor-core peaks."""
    assert peak_tflops(device, "bf16") == peak_tflops(device, "fp16") == peak
    assert peak_tflops(device, "fp32") in (30.3, 19.5)


def test_a_model_name_is_matched_whole():
    assert peak_tflops("NVIDIA L40S", "bf16") is None  # not an L4
    assert peak_tflops("Tesla T4", "fp16") == 65.0


def test_hardware_line_names_the_peak_only_where_known():
    use = {"train_tflops": 12.5, "train_tokens_per_second": 1000.0, "fraction_of_peak": 0.1923}
    assert hardware_line({**use, "peak_for": "Tesla T4, fp16"}).endswith(
        "19.2% of the Tesla T4, fp16 dense peak"
    )
    assert "peak" not in hardware_line({**use, "fraction_of_peak": None})


def test_a_run_reports_its_tflops_and_phase_times(tmp_path, tiny_model_dir, tiny_csv, capsys):
    out = tmp_path / "run"
    flags = (
        f"--config {ROOT / 'config/local.yaml'} --output-dir {out} --epochs 1 --batch-size 16 "
        f"--no-early-stopping --set model.name={tiny_model_dir} --set data.path={tiny_csv} "
        "--set model.max_length=32 --set train.class_weights=balanced"
    )
    assert main(shlex.split(flags)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    use = manifest["hardware_use"]
    assert use["train_tflops"] > 0 and use["tokens_counted"] == "real (non-pad) tokens"
    assert use["fraction_of_peak"] is None  # a CPU has no listed peak
    assert list(manifest["timing"]["phase_seconds"]) == list(PHASES)
    assert all(seconds >= 0 for seconds in manifest["timing"]["phase_seconds"].values())
    assert "TFLOP/s" in capsys.readouterr().out.splitlines()[-1]
    assert "class weights (balanced)" in (out / "training.log").read_text()


@pytest.mark.parametrize("name", ["bucketed", "megabatch"])
def test_both_batchings_run(tmp_path, tiny_model_dir, tiny_csv, name):
    flags = (
        f"--config {ROOT / 'config/local.yaml'} --output-dir {tmp_path / 'run'} --batch-size 8 "
        f"--no-early-stopping --set model.name={tiny_model_dir} --set data.path={tiny_csv} "
        f"--set model.max_length=32 --set train.batching={name} --set train.eval_strategy=steps "
        "--set train.eval_steps=2 --set train.max_steps=2"
    )
    assert main(shlex.split(flags)) == 0
