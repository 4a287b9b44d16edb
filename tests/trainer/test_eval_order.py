"""Evaluation and prediction in length-sorted batches (trainer.training.RunTrainer): the same metrics as
in the dataset's order, predictions handed back in the dataset's order; class-weighted loss weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers.integrations import TensorBoardCallback

from trainer.config import load_config
from trainer.precision import DeviceInfo, decide_precision
from trainer.run import prepare
from trainer.run_folder import RunFolder
from trainer.sampling import LengthSortedSampler
from trainer.training import (
    RunTrainer,
    WeightedLoss,
    balanced_class_weights,
    build_trainer,
    build_training_args,
)

CPU = DeviceInfo("cpu")


class InOrderTrainer(RunTrainer):
    """What HF does without the length sort: the dataset's own order."""

    def _get_eval_sampler(self, eval_dataset):
        return SequentialSampler(eval_dataset)


def trainer_and_data(tmp_path, tiny_model_dir, tiny_csv):
    cfg = load_config(
        None,
        "local",
        {
            "model.name": str(tiny_model_dir),
            "model.max_length": 32,
            "data.path": str(tiny_csv),
            "train.eval_batch_size": 8,
            "runtime.output_dir": str(tmp_path / "run"),
        },
    )
    prepared = prepare(cfg)
    data = prepared.encoded(cfg.model.max_length)
    args = build_training_args(
        cfg, decide_precision("auto", CPU), CPU, RunFolder(tmp_path / "run").checkpoints_dir
    )
    trainer = build_trainer(cfg, prepared.model, prepared.tokenizer, data, args, CPU, tmp_path / "tb")
    return trainer, data


def test_sorted_evaluation_gives_the_metrics_and_predictions_of_unsorted(tmp_path, tiny_model_dir, tiny_csv):
    trainer, data = trainer_and_data(tmp_path, tiny_model_dir, tiny_csv)
    sampler = trainer._get_eval_sampler(data["test"])
    assert isinstance(sampler, LengthSortedSampler) and list(sampler) != sorted(sampler)  # really reordered
    plain = InOrderTrainer(
        model=trainer.model,
        args=trainer.args,
        eval_dataset=data["val"],
        processing_class=trainer.processing_class,
        data_collator=trainer.data_collator,
        compute_metrics=trainer.compute_metrics,
    )
    # The reference is HF's own Trainer with the run's args: its TensorBoard callback (report_to) would write
    # to ./runs/<date_host>, since only the project's build_trainer points it at the run folder.
    plain.remove_callback(TensorBoardCallback)
    sorted_metrics, plain_metrics = trainer.evaluate(), plain.evaluate()
    for key in ("eval_accuracy", "eval_f1_macro", "eval_f1_weighted", "eval_recall_macro"):
        assert sorted_metrics[key] == plain_metrics[key]
    assert sorted_metrics["eval_loss"] == pytest.approx(plain_metrics["eval_loss"], abs=1e-5)

    predictions, labels, _ = trainer.predict_in_order(data["test"])
    reference = plain.predict(data["test"])
    np.testing.assert_array_equal(labels, reference.label_ids)
    np.testing.assert_allclose(predictions, reference.predictions, atol=1e-5)


def test_balanced_weights_are_inverse_frequency_with_mean_one_per_example():
    weights = balanced_class_weights([0, 0, 0, 1], 3)
    assert weights == pytest.approx([4 / 6, 2.0, 0.0])
    assert (3 * weights[0] + weights[1]) / 4 == pytest.approx(1.0)


def test_weighted_loss_counts_the_rare_class_more():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # both predicted class 0
    labels = torch.tensor([0, 1])
    outputs = {"logits": logits}
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert WeightedLoss([1.0, 1.0])(outputs, labels) == pytest.approx(plain.item())
    assert WeightedLoss([1.0, 1.0])(outputs, labels, num_items_in_batch=2) == pytest.approx(plain.item())
    assert WeightedLoss([0.5, 1.5])(outputs, labels, num_items_in_batch=2) > plain


def test_predictions_in_length_sorted_batches_come_back_in_input_order(tmp_path, tiny_model_dir, tiny_csv):
    from trainer.predict import Predictor

    trainer, _ = trainer_and_data(tmp_path, tiny_model_dir, tiny_csv)
    trainer.model.eval()
    predictor = Predictor(trainer.model, trainer.processing_class, ["a", "b", "c"], 32)
    texts = ["short", "a much longer text " * 5, "", "mid length text here", "x"]
    batched = predictor.predict(texts, batch_size=2)
    assert [row["text"] for row in batched] == texts and batched[2]["label"] is None
    for text, row in zip(texts, batched, strict=True):
        if text:
            alone = predictor.predict([text], batch_size=1)[0]
            assert row["label"] == alone["label"]
            assert row["scores"] == pytest.approx(alone["scores"], abs=1e-5)
