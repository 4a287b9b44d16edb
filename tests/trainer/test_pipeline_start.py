"""The start of every pipeline, `trainer.run.prepare`: config -> data -> tokenizer -> seeded model.
The batching benchmark's arms start from it, so the arms of a seed train the same initial weights."""

from __future__ import annotations

import importlib

import torch

from trainer.config import load_config
from trainer.modeling import load_model
from trainer.run import prepare


def load_benchmark():
    return importlib.import_module("benchmarks.batching")


def head(model) -> dict[str, torch.Tensor]:
    """The classification head: the weights that are new (randomly initialised) at every model load."""
    return {n: t.detach().clone() for n, t in model.state_dict().items() if "classifier" in n}


def test_benchmark_arms_start_from_identical_heads(tmp_path, tiny_model_dir, tiny_csv):
    bench = load_benchmark()
    args = bench.parse_args(["--model", str(tiny_model_dir), "--max-length", "32", "--rows", "20"])
    cfgs, heads = {}, {}
    for arm in ("padded", "megabatch", "bucketed", "packed"):
        cfgs[arm], prepared = bench.prepare_arm(arm, tiny_csv, 42, args, tmp_path)
        heads[arm] = head(prepared.model)
        torch.rand(1000)  # whatever the first arm's training would do to the global RNG
    assert cfgs["padded"].train.splits_batches is False and cfgs["bucketed"].train.group_by_length is True
    assert [cfgs[arm].train.batching for arm in ("megabatch", "bucketed", "packed")] == [
        "megabatch",
        "bucketed",
        "packed",
    ]
    assert cfgs["padded"].model.name == cfgs["bucketed"].model.name == str(tiny_model_dir)
    assert set(heads["padded"]) == {
        "pre_classifier.weight",
        "pre_classifier.bias",
        "classifier.weight",
        "classifier.bias",
    }
    for name, tensor in heads["padded"].items():
        torch.testing.assert_close(heads["bucketed"][name], tensor, rtol=0, atol=0)
        torch.testing.assert_close(heads["megabatch"][name], tensor, rtol=0, atol=0)
        torch.testing.assert_close(heads["packed"][name], tensor, rtol=0, atol=0)


def test_prepare_seeds_the_head_and_the_seed_matters(tiny_model_dir, tiny_csv):
    def cfg(seed: int):
        overrides = {"model.name": str(tiny_model_dir), "model.max_length": 32, "data.path": str(tiny_csv)}
        return load_config(None, "local", {**overrides, "train.seed": seed})

    first, again, other = (head(prepare(cfg(seed)).model) for seed in (42, 42, 7))
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not torch.equal(first["classifier.weight"], other["classifier.weight"])


def test_without_the_seed_two_loads_get_different_heads(tiny_model_dir):
    """What the benchmark did before it used `prepare`: the checks above can fail."""
    labels = ["negative", "neutral", "positive"]
    a, b = head(load_model(str(tiny_model_dir), labels)), head(load_model(str(tiny_model_dir), labels))
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
