"""ops.runcost: a run's training FLOPs counted on the laptop (the manifest's formula), its hours and cost
on an offer, and the MFU measured by earlier runs. Real: the project's config loader, data splitter, the
tiny model's tokenizer and configuration, trainer/flops.py."""

from __future__ import annotations

import pytest

from ops import runcost
from tests.support import ROOT
from trainer.flops import PEAK_TFLOPS, training_flops_per_token

CONFIG = ROOT / "config" / "cloud.yaml"


def test_the_runs_flops_are_the_manifests_formula_over_the_training_split(tiny_model_dir, tiny_csv):
    from transformers import AutoConfig, AutoTokenizer

    from trainer.config import load_config
    from trainer.data import load_splits

    work = runcost.run_work(CONFIG, str(tiny_csv), str(tiny_model_dir))
    cfg = load_config(CONFIG, "cloud", {"data.path": str(tiny_csv), "runtime.bucket": None})
    train = load_splits(cfg.data, cfg.train.seed).train
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(
        train["text"].tolist(), truncation=True, max_length=cfg.model.max_length
    )["input_ids"]
    tokens = sum(len(i) for i in ids)
    per_token = training_flops_per_token(AutoConfig.from_pretrained(tiny_model_dir), tokens / len(ids))
    assert work.tokens == tokens and work.epochs == cfg.train.epochs == 10
    assert work.flops == pytest.approx(per_token * tokens * 10)
    assert work.model == str(tiny_model_dir) and work.data == str(tiny_csv)


@pytest.mark.parametrize(
    ("data", "words"),
    [("gs://b/tweets.csv", "is in a bucket"), ("/no/such.csv", "no local data to count (/no/such.csv)")],
)
def test_what_cannot_be_counted_says_why(tmp_path, data, words):
    with pytest.raises(runcost.Unestimable, match=words.replace("(", r"\(").replace(")", r"\)")):
        runcost.run_work(CONFIG, data, str(tmp_path))


def test_a_model_this_machine_cannot_read_is_said_not_raised(tiny_csv, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(runcost.Unestimable) as said:
        runcost.run_work(CONFIG, str(tiny_csv), str(tmp_path / "not-a-model"))
    assert str(said.value).startswith(f"{tmp_path / 'not-a-model'}: ") and "\n" not in str(said.value)


def test_hours_and_cost_follow_the_gpus_peak_and_the_mfu():
    work = runcost.RunWork(flops=3.6e18, tokens=1, epochs=1, model="m", data="d")
    t4 = runcost.estimate(work, "nvidia-tesla-t4", 1, hourly=0.25)
    assert t4.mfu == runcost.ASSUMED_MFU and t4.mfu_source == "assumed 15%"
    assert t4.hours == pytest.approx(3.6e18 / (65e12 * 0.15) / 3600)
    assert t4.cost == pytest.approx(t4.hours * 0.25)
    # Two L4s in bf16 at a measured 30%.
    l4 = runcost.estimate(work, "nvidia-l4", 2, hourly=1.0, measured={"nvidia-l4": (0.3, "cloud-1")})
    assert l4.hours == pytest.approx(3.6e18 / (2 * 121e12 * 0.3) / 3600)
    assert l4.mfu_source == "30.0% measured by run cloud-1"
    # The precision each GPU trains in, as the policy picks it; a GPU without a peak: no estimate.
    assert runcost.peak("nvidia-tesla-a100") == (PEAK_TFLOPS["A100"]["bf16"], "bf16")
    assert runcost.peak("nvidia-tesla-p4") == (5.5, "fp32")
    assert runcost.estimate(work, "nvidia-h100-80gb", 1, hourly=1.0) is None


def test_the_measured_mfu_is_the_newest_runs_on_each_gpu_kind():
    a100 = "NVIDIA A100-SXM4-40GB, bf16"
    manifests = {
        "cloud-20261201-100000": {"hardware_use": {"fraction_of_peak": 0.11, "peak_for": "Tesla T4, fp16"}},
        "cloud-20261202-100000": {"hardware_use": {"fraction_of_peak": 0.14, "peak_for": "Tesla T4, fp16"}},
        "cloud-20261203-100000": {"hardware_use": {"fraction_of_peak": 0.27, "peak_for": "NVIDIA L4, bf16"}},
        "cloud-20261204-100000": {"hardware_use": {"fraction_of_peak": None, "peak_for": "cpu, fp32"}},
        "cloud-20261205-100000": {"hardware_use": {"fraction_of_peak": 0.4, "peak_for": "NVIDIA L40S, bf16"}},
        "cloud-20261206-100000": {"hardware_use": {"fraction_of_peak": 0.35, "peak_for": a100}},
    }
    assert runcost.measured_mfu(manifests) == {
        "nvidia-tesla-t4": (0.14, "cloud-20261202-100000"),
        "nvidia-l4": (0.27, "cloud-20261203-100000"),
        "nvidia-tesla-a100": (0.35, "cloud-20261206-100000"),
        "nvidia-a100-80gb": (0.35, "cloud-20261206-100000"),
    }
