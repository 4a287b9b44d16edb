"""Training behaviour through the real Trainer on the tiny model: LR schedules, early stopping,
gradient accumulation equivalence, the order of the training batches."""

from __future__ import annotations

import json
import math
import shlex
from itertools import pairwise

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from trainer.cli import main
from trainer.config import load_config
from trainer.precision import DeviceInfo, decide_precision
from trainer.run import prepare
from trainer.run_folder import RunFolder
from trainer.sampling import SeededLengthGroupedSampler
from trainer.training import build_trainer, build_training_args

CPU = DeviceInfo("cpu")


def make_trainer(tmp_path, tiny_model_dir, tiny_csv, model=None, **overrides):
    cfg = load_config(
        None,
        "local",
        {
            "model.name": str(tiny_model_dir),
            "model.max_length": 32,
            "data.path": str(tiny_csv),
            "runtime.output_dir": str(tmp_path / "run"),
            **overrides,
        },
    )
    prepared = prepare(cfg)  # the start of a real run: data, tokenizer, seeded model
    data = prepared.encoded(cfg.model.max_length)
    args = build_training_args(
        cfg, decide_precision("auto", CPU), CPU, RunFolder(tmp_path / "run").checkpoints_dir
    )
    return build_trainer(cfg, model or prepared.model, prepared.tokenizer, data, args, CPU, tmp_path / "tb")


def lr_curve(trainer, steps: int = 100) -> list[float]:
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return lrs


PEAK = 1e-3


@pytest.mark.parametrize(
    "scheduler",
    ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
)
def test_scheduler_shapes(tmp_path, tiny_model_dir, tiny_csv, scheduler):
    overrides = {
        "train.lr_scheduler": scheduler,
        "train.learning_rate": PEAK,
        "train.warmup_ratio": 0.1,
        "train.num_cycles": 2,
        "train.power": 2.0,
    }
    lrs = lr_curve(make_trainer(tmp_path, tiny_model_dir, tiny_csv, **overrides))
    warm, rest = lrs[:10], lrs[10:]
    if scheduler == "constant":  # no warmup by definition
        assert all(math.isclose(lr, PEAK) for lr in lrs)
        return
    # Warmup: from 0, strictly rising, to the peak at step 10.
    assert warm[0] == 0.0 and all(a < b for a, b in pairwise(warm))
    assert math.isclose(rest[0], PEAK)
    if scheduler == "constant_with_warmup":
        assert all(math.isclose(lr, PEAK) for lr in rest)
    elif scheduler == "cosine_with_restarts":
        # two cycles of 45 steps: decays, jumps back to the peak, decays again
        jumps = [i for i, (a, b) in enumerate(pairwise(rest)) if b > a + PEAK / 4]
        assert len(jumps) == 1 and 40 <= jumps[0] <= 50
        assert math.isclose(rest[jumps[0] + 1], PEAK, rel_tol=0.05)
    else:
        assert all(a >= b for a, b in pairwise(rest)), "must decay monotonically"
        assert rest[-1] < PEAK * 0.05
        midpoint = rest[45] / PEAK
        if scheduler == "linear":
            assert midpoint == pytest.approx(0.5, abs=0.03)
        elif scheduler == "cosine":
            assert midpoint == pytest.approx(0.5, abs=0.05) and rest[5] / PEAK > 0.97  # flat start
        elif scheduler == "polynomial":  # power 2: below linear at the midpoint
            assert midpoint == pytest.approx(0.25, abs=0.04)


def test_warmup_steps_win_over_ratio(tmp_path, tiny_model_dir, tiny_csv):
    lrs = lr_curve(
        make_trainer(
            tmp_path,
            tiny_model_dir,
            tiny_csv,
            **{
                "train.learning_rate": PEAK,
                "train.warmup_ratio": 0.5,
                "train.warmup_steps": 4,
                "train.lr_scheduler": "constant_with_warmup",
            },
        )
    )
    assert lrs[3] < PEAK and math.isclose(lrs[4], PEAK)


class GradCapture(TrainerCallback):
    """Gradients as the optimizer is about to see them, plus the logged training loss."""

    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}
        self.losses: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.grads:
            self.grads = {
                n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
            }

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def one_step(tmp_path, tiny_model_dir, tiny_csv, batch, accumulation, fix=True):
    torch.manual_seed(0)
    trainer = make_trainer(
        tmp_path / f"b{batch}x{accumulation}{fix}",
        tiny_model_dir,
        tiny_csv,
        **{
            "train.batch_size": batch,
            "train.gradient_accumulation_steps": accumulation,
            "train.max_steps": 1,
            "train.max_grad_norm": 0.0,
            "train.logging_steps": 1,
            "train.group_by_length": False,
            "train.warmup_ratio": 0.0,
            "train.eval_strategy": "steps",
            "train.eval_steps": 1000,
        },
    )
    # make_trainer loads the model with the fix; undo it to show what goes wrong without it
    trainer.model.accepts_loss_kwargs = fix
    trainer.model_accepts_loss_kwargs = not fix
    capture = GradCapture()
    trainer.add_callback(capture)
    trainer.train()
    return capture


def test_gradient_accumulation_matches_the_big_batch(tmp_path, tiny_model_dir, tiny_csv):
    big = one_step(tmp_path, tiny_model_dir, tiny_csv, batch=16, accumulation=1)
    acc = one_step(tmp_path, tiny_model_dir, tiny_csv, batch=8, accumulation=2)
    assert big.grads.keys() == acc.grads.keys() and big.grads
    for name, grad in big.grads.items():
        torch.testing.assert_close(acc.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert acc.losses[0] == pytest.approx(big.losses[0], rel=1e-4)


def test_without_the_fix_accumulation_inflates_gradients(tmp_path, tiny_model_dir, tiny_csv):
    """What transformers 5 does by default for BERT-family models: the check above can fail."""
    big = one_step(tmp_path, tiny_model_dir, tiny_csv, batch=16, accumulation=1)
    broken = one_step(tmp_path, tiny_model_dir, tiny_csv, batch=8, accumulation=2, fix=False)
    name = "classifier.weight"
    ratio = broken.grads[name].norm() / big.grads[name].norm()
    assert ratio == pytest.approx(2.0, rel=1e-3)


def one_batch_step(tmp_path, tiny_model_dir, **overrides):
    """One optimizer step over a training split of exactly one batch (16 texts of 3 to 17 words), so
    every batching trains the same texts; returns the captured gradients, the training forward passes'
    shapes and the Trainer's arguments."""
    from tests.conftest import make_texts

    files = {}
    tmp_path.mkdir(parents=True)
    for split, n, seed in [("train", 16, 3), ("val", 6, 4), ("test", 6, 5)]:
        files[split] = tmp_path / f"{split}.csv"
        make_texts(n, seed=seed).to_csv(files[split], index=False)
    torch.manual_seed(0)
    trainer = make_trainer(
        tmp_path / "run",
        tiny_model_dir,
        files["train"],
        **{
            "data.path": None,
            "data.train_path": str(files["train"]),
            "data.val_path": str(files["val"]),
            "data.test_path": str(files["test"]),
            "train.batch_size": 16,
            "train.max_steps": 1,
            "train.max_grad_norm": 0.0,
            "train.warmup_ratio": 0.0,
            "train.logging_steps": 1,
            "train.eval_strategy": "steps",
            "train.eval_steps": 1000,
            **overrides,
        },
    )
    shapes = []

    def record(module, args, kwargs):
        if module.training:
            shapes.append(tuple(kwargs["input_ids"].shape))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    capture = GradCapture()
    trainer.add_callback(capture)
    trainer.train()
    return capture, shapes, trainer.args


@pytest.mark.parametrize("weights", ["none", "balanced"])
def test_split_batching_has_the_random_batch_gradient_with_less_padding(tmp_path, tiny_model_dir, weights):
    """Batching split cuts the batch of 16 into 4 length-sorted micro-batches of 4 accumulated into the
    step: the gradient (and the logged loss) is that of the whole random batch, with or without class
    weights, while the forward passes pad to each micro-batch's own longest text."""
    common = {"train.class_weights": weights}
    whole, whole_shapes, _ = one_batch_step(
        tmp_path / "random", tiny_model_dir, **common, **{"train.group_by_length": False}
    )
    split, split_shapes, args = one_batch_step(
        tmp_path / "split",
        tiny_model_dir,
        **common,
        **{"train.batching": "split", "train.micro_batch_size": 4},
    )
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 4)
    assert len(whole_shapes) == 1 and whole_shapes[0][0] == 16
    assert [rows for rows, _ in split_shapes] == [4, 4, 4, 4]
    widths = [width for _, width in split_shapes]
    assert widths == sorted(widths, reverse=True) and widths[0] == whole_shapes[0][1]
    assert sum(4 * w for w in widths) < 0.8 * 16 * whole_shapes[0][1]
    assert whole.grads.keys() == split.grads.keys() and whole.grads
    for name, grad in whole.grads.items():
        torch.testing.assert_close(split.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert split.losses[0] == pytest.approx(whole.losses[0], rel=1e-4)


@pytest.mark.parametrize("weights", ["none", "balanced"])
def test_packed_batching_has_the_random_batch_gradient_in_one_pass(tmp_path, tiny_model_dir, weights):
    """Batching packed lays the batch's 16 texts end to end in rows (one forward pass, far fewer tokens
    than the batch padded to its longest text): the gradient and the logged loss are the whole random
    batch's, with or without class weights."""
    common = {"train.class_weights": weights}
    whole, whole_shapes, _ = one_batch_step(
        tmp_path / "random", tiny_model_dir, **common, **{"train.group_by_length": False}
    )
    packed, packed_shapes, args = one_batch_step(
        tmp_path / "packed", tiny_model_dir, **common, **{"train.batching": "packed"}
    )
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert len(whole_shapes) == 1 and whole_shapes[0][0] == 16
    assert len(packed_shapes) == 1
    rows, width = packed_shapes[0]
    assert rows < 16 and rows * width < 16 * whole_shapes[0][1]  # fewer tokens than padded to the longest
    assert whole.grads.keys() == packed.grads.keys() and whole.grads
    for name, grad in whole.grads.items():
        torch.testing.assert_close(packed.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert packed.losses[0] == pytest.approx(whole.losses[0], rel=1e-4)


def test_packed_batching_pads_batches_for_a_model_packing_does_not_know(tmp_path, tiny_model_dir, tiny_csv):
    """A RoBERTa (positions counted from padding_idx + 1) cannot be packed: the log says why, once, and
    the run trains the same random batch padded to its longest text, with the same gradient."""
    import logging

    from tests.conftest import build_tiny_model

    roberta = build_tiny_model(tmp_path / "roberta", "roberta")
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("trainer.training").addHandler(handler)
    try:
        padded, shapes, _ = one_batch_step(tmp_path / "run", roberta, **{"train.batching": "packed"})
    finally:
        logging.getLogger("trainer.training").removeHandler(handler)
    assert len(said) == 1 and "train.batching packed is not available" in said[0] and "'roberta'" in said[0]
    assert len(shapes) == 1 and shapes[0][0] == 16 and padded.grads
    whole, _, _ = one_batch_step(tmp_path / "whole", roberta, **{"train.group_by_length": False})
    for name, grad in whole.grads.items():
        torch.testing.assert_close(padded.grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # what the manifest records as the batching used
    fallback = make_trainer(tmp_path / "used", roberta, tiny_csv, **{"train.batching": "packed"})
    assert fallback.batching_used.startswith("random, padded per batch (model type 'roberta'")
    assert make_trainer(tmp_path / "tiny", tiny_model_dir, tiny_csv).batching_used == "packed"


def test_cpu_micro_batches_accumulate_a_sparse_embedding_gradient(tmp_path, tiny_model_dir, tiny_csv):
    """Several micro-batches a step on one CPU process: the input embedding's gradient is sparse while it
    accumulates (the rows of the step's tokens only) and dense by the time clipping and AdamW see it (the
    gradient checks above compare it with the whole batch's); one micro-batch a step, a GPU or several
    processes leave the embedding as it was."""
    from types import SimpleNamespace

    from trainer.training import sparse_embedding_grads

    one_step_of_4 = {
        "train.batching": "split",
        "train.batch_size": 16,
        "train.micro_batch_size": 4,
        "train.max_steps": 1,
    }
    split = make_trainer(tmp_path / "split", tiny_model_dir, tiny_csv, **one_step_of_4)
    embedding = split.model.get_input_embeddings()
    assert split.sparse_embedding is embedding and embedding.sparse
    whole = make_trainer(tmp_path / "whole", tiny_model_dir, tiny_csv, **{"train.group_by_length": False})
    assert whole.sparse_embedding is None and not whole.model.get_input_embeddings().sparse

    seen = []
    weight = embedding.weight
    weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.is_sparse))
    capture = GradCapture()
    split.add_callback(capture)
    split.train()
    assert seen == [True] * 4  # accumulated sparse over the 4 micro-batches
    name = next(n for n, p in split.model.named_parameters() if p is weight)
    assert not capture.grads[name].is_sparse and capture.grads[name].abs().sum() > 0

    def args(**changes):
        base = {"gradient_accumulation_steps": 4, "world_size": 1, "device": torch.device("cpu")}
        return SimpleNamespace(**{**base, **changes})

    model = whole.model
    assert sparse_embedding_grads(model, args(gradient_accumulation_steps=1)) is None
    assert sparse_embedding_grads(model, args(world_size=2)) is None
    assert sparse_embedding_grads(model, args(device=torch.device("cuda"))) is None
    model.get_input_embeddings().weight.requires_grad_(False)
    assert sparse_embedding_grads(model, args()) is None
    assert not model.get_input_embeddings().sparse


def test_a_micro_batch_size_that_does_not_divide_the_batch_is_refused(tmp_path, tiny_model_dir, tiny_csv):
    from trainer.config import ConfigError

    split = {"train.batching": "split", "train.micro_batch_size": 8}
    with pytest.raises(ConfigError, match=r"train.micro_batch_size 8 must divide train.batch_size 12"):
        make_trainer(tmp_path, tiny_model_dir, tiny_csv, **split, **{"train.batch_size": 12})
    # no split when the batch fits in one micro-batch, without length grouping, or with another batching
    for overrides in (
        {"train.batch_size": 6},
        {"train.batch_size": 12, "train.group_by_length": False},
        {"train.batch_size": 12, "train.batching": "packed"},
    ):
        args = make_trainer(tmp_path, tiny_model_dir, tiny_csv, **{**split, **overrides}).args
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
            overrides["train.batch_size"],
            1,
        )


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def run_tiny(out, model_dir, csv, flags: str) -> dict:
    """Train the tiny model through the CLI with extra `flags`; return the run's manifest."""
    base = (
        f"--output-dir {out} --set model.name={model_dir} --set model.max_length=32 "
        f"--set data.path={csv} --set data.max_rows=null"
    )
    assert main(shlex.split(f"{base} --batch-size 16 --learning-rate 0.005 {flags}")) == 0
    return json.loads((out / "manifest.json").read_text())


STEPS_PER_EPOCH = 240 // 16


def test_early_stopping_stops_after_patience_and_restores_best(tmp_path, tiny_model_dir, tiny_csv):
    # min_delta 2.0 on a metric in [0, 1]: after the first evaluation nothing counts as improving,
    # so training must stop after exactly `patience` more evaluations, well before 20 epochs.
    out = tmp_path / "es"
    manifest = run_tiny(
        out,
        tiny_model_dir,
        tiny_csv,
        "--epochs 20 --set train.early_stopping.patience=2 "
        "--set train.early_stopping.min_delta=2.0 --set train.save_total_limit=5",
    )
    assert manifest["training"]["stopped_early"] is True
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH  # 1 best + 2 without improvement
    # The restored model is the checkpoint with the best eval_f1_macro, not the last one trained.
    last_ckpt = out / "checkpoints" / f"checkpoint-{3 * STEPS_PER_EPOCH}"
    history = json.loads((last_ckpt / "trainer_state.json").read_text())["log_history"]
    evals = {h["step"]: h["eval_f1_macro"] for h in history if "eval_f1_macro" in h}
    assert len(evals) == 3
    best_step = max(evals, key=lambda step: (evals[step], -step))
    assert manifest["training"]["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert manifest["training"]["best_metric"]["eval_f1_macro"] == pytest.approx(evals[best_step])
    saved = _weights(out / "model")
    for name, tensor in _weights(out / "checkpoints" / f"checkpoint-{best_step}").items():
        torch.testing.assert_close(saved[name], tensor)


def test_no_early_stopping_runs_every_epoch(tmp_path, tiny_model_dir, tiny_csv):
    manifest = run_tiny(
        tmp_path / "no-es",
        tiny_model_dir,
        tiny_csv,
        "--epochs 4 --no-early-stopping --set train.early_stopping.min_delta=2.0",
    )
    assert manifest["training"]["stopped_early"] is False
    assert manifest["training"]["global_steps"] == 4 * STEPS_PER_EPOCH


def test_best_model_restored_when_it_is_not_the_last(tmp_path, tiny_model_dir, tiny_csv):
    # Watching eval_loss with mode=max makes the first (highest-loss) evaluation the best one while the
    # loss keeps falling: training stops after patience=2 and must restore checkpoint 1, not the last.
    out = tmp_path / "restore"
    manifest = run_tiny(
        out,
        tiny_model_dir,
        tiny_csv,
        "--epochs 10 --set train.early_stopping.patience=2 "
        "--set train.early_stopping.metric=eval_loss --set train.early_stopping.mode=max "
        "--set train.save_total_limit=5",
    )
    assert manifest["training"]["global_steps"] == 3 * STEPS_PER_EPOCH
    assert manifest["training"]["best_checkpoint"].endswith(f"checkpoint-{STEPS_PER_EPOCH}")
    saved = _weights(out / "model")
    last = _weights(out / "checkpoints" / f"checkpoint-{3 * STEPS_PER_EPOCH}")
    for name, tensor in _weights(out / "checkpoints" / f"checkpoint-{STEPS_PER_EPOCH}").items():
        torch.testing.assert_close(saved[name], tensor)
    assert any(not torch.equal(saved[n], last[n]) for n in saved)


def test_gpu_batches_pad_to_a_multiple_of_8_and_cpu_batches_do_not(tmp_path, tiny_model_dir, tiny_csv):
    trainer = make_trainer(tmp_path, tiny_model_dir, tiny_csv)
    assert trainer.data_collator.pad_to_multiple_of is None
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    longest = max(len(trainer.train_dataset[i]["input_ids"]) for i in range(4))
    assert batch["input_ids"].shape[1] == longest  # dynamic padding: never max_length (32)
    assert isinstance(trainer._get_train_sampler(), SeededLengthGroupedSampler)  # length-aware batches
    t4 = DeviceInfo("cuda", "Tesla T4", (7, 5), 1)
    cfg = load_config(None, "local", {"model.name": str(tiny_model_dir), "data.path": str(tiny_csv)})
    gpu_trainer = build_trainer(
        cfg,
        trainer.model,
        trainer.processing_class,
        {"train": trainer.train_dataset, "val": trainer.eval_dataset},
        trainer.args,
        t4,
        tmp_path / "tb-gpu",
    )
    assert gpu_trainer.data_collator.pad_to_multiple_of == 8
    assert (
        gpu_trainer.data_collator([trainer.train_dataset[i] for i in range(4)])["input_ids"].shape[1] % 8 == 0
    )


def test_batch_order_comes_from_the_seed_and_the_epoch_only(tmp_path, tiny_model_dir, tiny_csv):
    """A resumed run makes its sampler at another point of the global RNG stream than an uninterrupted
        one: the order must not depend on it. Each epoch is a permutation. (How batches are grouped by length
    is `trainer.sampling`'s policy, tested with it.)"""
    sampler = make_trainer(tmp_path, tiny_model_dir, tiny_csv)._get_train_sampler()
    orders = {}
    for epoch, noise in [(0, 1), (1, 2), (0, 3), (1, 4)]:
        torch.manual_seed(noise)  # whatever the global RNG holds
        torch.rand(noise)
        sampler.set_epoch(epoch)
        orders.setdefault(epoch, []).append(list(sampler))
    assert orders[0][0] == orders[0][1] and orders[1][0] == orders[1][1]
    assert orders[0][0] != orders[1][0], "each epoch its own order"
    assert sorted(orders[0][0]) == list(range(len(sampler)))
    other_seed = SeededLengthGroupedSampler(sampler.lengths, sampler.batch_size, seed=sampler.seed + 1)
    assert list(other_seed) != orders[0][0]
