"""Training with HF `Trainer`: arguments from the config, callbacks, evaluation on val and test."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import Trainer, TrainerCallback

from trainer.checkpoints import CompletionMarkerCallback
from trainer.config import Config, TrainConfig
from trainer.flops import fraction_of_peak, training_flops_per_token
from trainer.metrics import compute_metrics, full_report
from trainer.packing import PACKED_INDEX, PackingCollator, first_tokens, packing_problem
from trainer.precision import DeviceInfo, PrecisionDecision
from trainer.sampling import LengthSortedSampler, SeededLengthGroupedSampler, example_lengths
from trainer.timing import PhaseClock
from trainer.tracking import Reporting, unchecked

log = logging.getLogger(__name__)
# Per-step records go to training.log only; the progress bar already shows them on the console.
step_log = logging.getLogger("trainer.steps")


def scheduler_kwargs(t: TrainConfig) -> dict[str, Any]:
    if t.lr_scheduler == "cosine_with_restarts":
        return {"num_cycles": t.num_cycles}
    if t.lr_scheduler == "polynomial":
        return {"power": t.power, "lr_end": t.lr_end}
    return {}


def warmup(t: TrainConfig) -> float:
    """transformers 5 takes one `warmup_steps`: >= 1 is a step count, < 1 a ratio of all steps."""
    return int(t.warmup_steps) if t.warmup_steps > 0 else float(t.warmup_ratio)


def build_training_args(
    cfg: Config,
    decision: PrecisionDecision,
    device: DeviceInfo,
    checkpoint_dir: Path,
    report_to: Sequence[str] | None = None,
    run_name: str | None = None,
    machines: int = 1,
):
    """`report_to`: the trackers after `trainer.tracking.check` (default: train.report_to as configured);
    `run_name`: the trackers' run name (default: the run folder's name, checkpoint_dir's parent);
    `machines`: several save each checkpoint whole on every machine's disk (each resumes from its own, and
    loads the best model at the end from it)."""
    from transformers import TrainingArguments

    t, es = cfg.train, cfg.train.early_stopping
    steps = t.eval_strategy == "steps"
    # Batching split: the Trainer loads micro-batches and accumulates them into the configured batch.
    device_batch, accumulation = t.micro_batches()
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=device_batch,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        lr_scheduler_kwargs=scheduler_kwargs(t),
        warmup_steps=warmup(t),
        gradient_accumulation_steps=accumulation,
        max_grad_norm=t.max_grad_norm,
        fp16=decision.fp16,
        bf16=decision.bf16,
        use_cpu=not device.is_cuda,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps if steps else None,
        save_strategy=t.eval_strategy,
        save_steps=t.eval_steps if steps else None,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=es.metric,
        greater_is_better=es.mode == "max",
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        # HF's integrations report (trainer.tracking points TensorBoard at <run>/tensorboard and guards the
        # others); they read their settings from the environment.
        report_to=list(cfg.train.report_to if report_to is None else report_to),
        run_name=run_name or checkpoint_dir.parent.name,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=cfg.runtime.num_workers,
        dataloader_pin_memory=device.is_cuda,
        save_only_model=False,
        save_on_each_node=machines > 1,
        ddp_timeout=cfg.runtime.collective_timeout_s,
        # The early-stopping patience counter survives a resume (transformers 5 leaves it at 0 by default).
        restore_callback_states_from_checkpoint=True,
    )


@dataclass(frozen=True)
class BatchUse:
    """The batch of one optimizer step, as configured and as trained. A training split smaller than the
    effective batch (train.batch_size x gradient_accumulation_steps x processes) is trained as one step
    per epoch over the whole split: the batch really used is capped at the split."""

    configured: int
    "texts per optimizer step the config asks for"
    used: int
    "texts per optimizer step the run really trains on (at most the training split)"
    device_batch: int
    "texts per forward pass on one process (the Trainer's per-device batch, at most its share of the split)"
    accumulated: int
    "forward passes accumulated per optimizer step"
    train_rows: int
    batch_size: int
    "train.batch_size, for the message"
    accumulation: int
    "train.gradient_accumulation_steps, for the message"
    world_size: int

    @classmethod
    def of(cls, train: TrainConfig, world_size: int, train_rows: int) -> BatchUse:
        device_batch, accumulation = train.micro_batches()
        world = max(1, world_size)
        configured = device_batch * accumulation * world
        share = max(1, -(-train_rows // world))  # each process's rows per epoch
        device_used = min(device_batch, share)
        return cls(
            configured=configured,
            used=min(configured, train_rows),
            device_batch=device_used,
            accumulated=min(accumulation, -(-share // device_used)),
            train_rows=train_rows,
            batch_size=train.batch_size,
            accumulation=train.gradient_accumulation_steps,
            world_size=world,
        )

    def warning(self) -> str | None:
        """One line when the configured batch exceeds the training split: the numbers, and the fix."""
        if self.configured <= self.train_rows:
            return None
        processes = f"{self.world_size} process" + ("es" if self.world_size > 1 else "")
        per_step = self.accumulation * self.world_size
        fit = self.train_rows // (2 * per_step)  # a batch size that gives two or more steps per epoch
        fix = (
            f"lower --batch-size (train.batch_size) to {fit} or less for two or more steps per epoch"
            if fit >= 1
            else "lower train.gradient_accumulation_steps (or use fewer processes)"
        )
        return (
            f"the effective batch ({self.batch_size} train.batch_size x {self.accumulation} "
            f"gradient_accumulation_steps x {processes} = {self.configured}) is larger than the training "
            f"split ({self.train_rows} rows): each epoch is one optimizer step over the whole split, and the "
            f"manifest records a batch of {self.used}; {fix}"
        )


class LogFileCallback(TrainerCallback):
    """Every Trainer log record (loss, lr, eval metrics) also goes to training.log as one JSON line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            step_log.info("step %d: %s", state.global_step, json.dumps(_rounded(logs)))


def _rounded(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in logs.items()}


@dataclass
class TrainOutcome:
    trainer: Any
    train_metrics: dict[str, float]
    val_report: dict[str, Any]
    test_report: dict[str, Any]
    log_history: list[dict[str, Any]]
    stopped_early: bool
    hardware_use: dict[str, Any]
    clock: PhaseClock
    "seconds per phase of this attempt (trainer.timing), read by the manifest"


class RunTrainer(Trainer):
    """HF's Trainer with three changes: length-aware batches come from `trainer.sampling`, in an order set
    by the run's seed and the epoch (so a resumed run sees the batches an uninterrupted one does), grouped
    as `batching` says; with a `packer`, each training batch is packed (`trainer.packing`: no padding, one
    pass); and, with `class_weights`, a class-weighted cross-entropy loss."""

    def __init__(
        self,
        *args,
        batching: str = "packed",
        bucket_batches: int = 8,
        packer: PackingCollator | None = None,
        class_weights=None,
        **kwargs,
    ):
        if class_weights is not None:
            kwargs["compute_loss_func"] = WeightedLoss(class_weights)
        super().__init__(*args, **kwargs)
        self.batching = batching
        self.bucket_batches = bucket_batches
        self.packer = packer
        self.sparse_embedding = sparse_embedding_grads(self.model, self.args)

    @property
    def batching_used(self) -> str:
        """The batching training really uses (the manifest's): `packed` falls back to random batches padded
        to their longest text for a model packing does not know."""
        if self.args.train_sampling_strategy != "group_by_length":
            return "random"
        if self.batching == "packed" and self.packer is None:
            return f"random, padded per batch ({packing_problem(self.model)})"
        return self.batching

    def get_train_dataloader(self):
        """With a packer, training batches are packed; evaluation keeps the padding collator (its batches
        are sorted by length, so they pad little)."""
        if self.packer is None:
            return super().get_train_dataloader()
        padding, self.data_collator = self.data_collator, self.packer
        try:
            return super().get_train_dataloader()  # the DataLoader keeps the packer as its collate_fn
        finally:
            self.data_collator = padding

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        index = inputs.pop(PACKED_INDEX, None)
        if index is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with first_tokens(self.accelerator.unwrap_model(model), index):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The step's last micro-batch: its summed sparse gradient made dense once, for clipping and AdamW.
        if self.sparse_embedding is not None and self.accelerator.sync_gradients:
            weight = self.sparse_embedding.weight
            if weight.grad is not None and weight.grad.is_sparse:
                weight.grad = weight.grad.to_dense()
        return loss

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
            return super()._get_train_sampler(train_dataset)
        # One optimizer step's texts: `split` and `packed` order the step's whole batch, over every process
        # (accelerate deals the loader's batches out in turn, so the processes together train one random
        # batch, the one a single process trains at the same effective batch).
        pieces = self.args.gradient_accumulation_steps
        if self.batching in ("split", "packed"):
            pieces *= self.args.world_size
        return SeededLengthGroupedSampler(
            example_lengths(dataset, self.args.length_column_name),
            self.args.train_batch_size * pieces,
            self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            self.batching,
            self.bucket_batches,
            pieces=pieces,
        )

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation and prediction batches sorted by length (one process; several processes keep HF's
        sharded order). Metrics do not depend on the order: predictions and labels travel together."""
        if eval_dataset is None or self.args.world_size > 1 or not hasattr(eval_dataset, "column_names"):
            return super()._get_eval_sampler(eval_dataset)
        return LengthSortedSampler(example_lengths(eval_dataset, self.args.length_column_name))

    def predict_in_order(self, dataset, metric_key_prefix: str = "test"):
        """`predict`, with predictions and labels in the dataset's order."""
        out = self.predict(dataset, metric_key_prefix=metric_key_prefix)
        predictions, labels = np.asarray(out.predictions), np.asarray(out.label_ids)
        sampler = self._get_eval_sampler(self._remove_unused_columns(dataset, description="test"))
        if isinstance(sampler, LengthSortedSampler):
            predictions, labels = sampler.restore(predictions), sampler.restore(labels)
        return predictions, labels, out.metrics


def sparse_embedding_grads(model, args):
    """On a CPU, one process, several micro-batches per step: the input embedding's gradient made sparse
    (only the rows of the step's tokens) and densified once per optimizer step, in `training_step`.

    A dense embedding gradient is the whole vocabulary (30,522 x 384 floats, 47 MB, for MiniLM and
    DistilBERT's 768: 94 MB) zeroed, filled and added into `.grad` at every micro-batch; on two CPU cores
    that is a fixed ~20 ms of a 90-160 ms forward and backward pass of 8 texts (MiniLM, 2 Xeon cores: 157
    against 130 ms for 8 texts of 40 tokens, dense against sparse, 2026-12-06). The sum is the same
    (to float rounding), so the optimizer sees the dense gradient it would have. Not on a GPU (memory
    bandwidth makes it negligible there, and DDP reduces dense gradients) nor with one micro-batch a step
    (nothing to accumulate). Returns the embedding module it changed, or None."""
    from torch import nn

    if args.gradient_accumulation_steps < 2 or args.world_size > 1 or args.device.type != "cpu":
        return None
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, nn.Embedding) or not embedding.weight.requires_grad:
        return None
    embedding.sparse = True
    return embedding


def balanced_class_weights(labels, num_classes: int) -> list[float]:
    """Inverse class frequency in the training split, normalised so the examples' mean weight is 1
    (scikit-learn's `balanced`: n / (classes x count)); a class absent from the split gets weight 0
    and does not count among the classes."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    n, present = counts.sum(), int((counts > 0).sum())
    return [float(n / (present * c)) if c else 0.0 for c in counts]


class WeightedLoss:
    """Class-weighted cross-entropy for the Trainer's `compute_loss_func`: summed over the batch and
    divided by the examples in the whole (accumulated) batch when the Trainer says how many, else a mean."""

    def __init__(self, weights: list[float]):
        self.weights = weights

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch
        from torch.nn import functional

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weight = torch.tensor(self.weights, dtype=torch.float32, device=logits.device)
        if num_items_in_batch is None:
            return functional.cross_entropy(logits.float(), labels, weight=weight)
        total = functional.cross_entropy(logits.float(), labels, weight=weight, reduction="sum")
        return total / num_items_in_batch


def build_trainer(
    cfg: Config,
    model,
    tokenizer,
    datasets_,
    args,
    device: DeviceInfo,
    tb_dir: Path,
    extra=(),
    last=(),
    reporting: Reporting | None = None,
):
    """`extra` callbacks run after the checkpoint's completion marker is written (the bucket sync);
    `last` ones after all others (the SIGTERM stop, which ends the run from its `on_save`). The trackers
    are HF's, from `args.report_to`; `reporting` (default: those, unchecked) points TensorBoard at
    `tb_dir`, guards the others and records their runs for the manifest."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    es = cfg.train.early_stopping
    if reporting is None:
        reporting = Reporting(unchecked(args.report_to), tb_dir)
    callbacks = [CompletionMarkerCallback(), LogFileCallback(), *extra, reporting]
    if es.enabled:
        callbacks.append(
            EarlyStoppingCallback(early_stopping_patience=es.patience, early_stopping_threshold=es.min_delta)
        )
    callbacks.extend(last)
    weights = None
    packer = packer_for(cfg, model, tokenizer)
    if cfg.train.class_weights == "balanced":
        weights = balanced_class_weights(datasets_["train"]["labels"], model.config.num_labels)
        log.info("class weights (balanced): %s", [round(w, 4) for w in weights])
    trainer = RunTrainer(
        model=model,
        args=args,
        train_dataset=datasets_["train"],
        eval_dataset=datasets_["val"],
        processing_class=tokenizer,
        # Dynamic padding: each batch is padded to its longest text, to a multiple of 8 on a GPU
        # (tensor-core friendly shapes); never to max_length.
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if device.is_cuda else None),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        batching=cfg.train.batching,
        bucket_batches=cfg.train.bucket_batches,
        packer=packer,
        class_weights=weights,
    )
    reporting.attach(trainer)
    return trainer


def packer_for(cfg: Config, model, tokenizer) -> PackingCollator | None:
    """Batching packed: the collator that packs each training batch; None for the other batchings, and
    for a model packing does not know (said once in the log: those batches are random, padded per batch)."""
    if not (cfg.train.group_by_length and cfg.train.batching == "packed"):
        return None
    problem = packing_problem(model)
    if problem:
        log.warning(
            "train.batching packed is not available for %s: %s; training on random batches padded to their "
            "longest text instead (train.batching=split pads less)",
            cfg.model.name,
            problem,
        )
        return None
    eager = getattr(model.config, "_attn_implementation", None) == "eager"
    return PackingCollator(cfg.model.max_length, tokenizer.pad_token_id, additive_mask=eager)


def hardware_use(trainer, train_dataset, train_metrics: dict[str, float]) -> dict[str, Any]:
    """Achieved training TFLOP/s from the model's FLOPs per token (trainer.flops) x real (non-pad) tokens
    per second, and on a known GPU the fraction of its dense peak for the precision used."""
    lengths = example_lengths(train_dataset, trainer.args.length_column_name)
    if "attention_mask" in train_dataset.column_names:  # padded inputs: count the real tokens only
        lengths = [sum(mask) for mask in train_dataset["attention_mask"]]
    mean_length = sum(lengths) / max(1, len(lengths))
    tokens_per_second = mean_length * train_metrics.get("train_samples_per_second", 0.0)
    model = trainer.accelerator.unwrap_model(trainer.model)
    flops_per_token = training_flops_per_token(model.config, mean_length)
    tflops = flops_per_token * tokens_per_second / 1e12
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    device = "cpu"
    if trainer.args.device.type == "cuda":
        import torch

        device = torch.cuda.get_device_name(trainer.args.device)
    return {
        "train_tflops": float(f"{tflops:.4g}"),
        "tokens_counted": "real (non-pad) tokens",
        "train_tokens_per_second": round(tokens_per_second, 1),
        "flops_per_token": flops_per_token,
        "fraction_of_peak": fraction_of_peak(tflops, device, precision),
        "peak_for": f"{device}, {precision}",
    }


def train_and_evaluate(
    trainer, labels: list[str], datasets_, resume: str | bool | None, clock: PhaseClock | None = None
) -> TrainOutcome:
    clock = clock or PhaseClock()
    with clock.phase("training"):
        result = trainer.train(resume_from_checkpoint=resume or None)
    state = trainer.state
    planned = trainer.args.max_steps if trainer.args.max_steps > 0 else None
    stopped_early = bool(
        state.global_step < (planned or state.max_steps) and trainer.control.should_training_stop
    )
    if stopped_early:
        log.info(
            "early stopping after %d steps; best %s = %s",
            state.global_step,
            trainer.args.metric_for_best_model,
            state.best_metric,
        )
    reports = {}
    for split in ("val", "test"):
        with clock.phase("evaluating"):
            predictions, label_ids, _ = trainer.predict_in_order(datasets_[split], metric_key_prefix=split)
        reports[split] = full_report(predictions, label_ids, labels)
        log.info(
            "%s: macro-F1 %.4f, accuracy %.4f", split, reports[split]["f1_macro"], reports[split]["accuracy"]
        )
    return TrainOutcome(
        trainer=trainer,
        train_metrics=dict(result.metrics),
        val_report=reports["val"],
        test_report=reports["test"],
        log_history=list(state.log_history),
        stopped_early=stopped_early,
        hardware_use=hardware_use(trainer, datasets_["train"], dict(result.metrics)),
        clock=clock,
    )
