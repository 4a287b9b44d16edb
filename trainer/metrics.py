"""Honest metrics with scikit-learn: macro-F1 first, never accuracy alone."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Binary AUC on the positive class; one-vs-rest macro AUC for more classes; None if undefined."""
    num_classes = probs.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if num_classes == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    if len(present) < num_classes:  # a class absent from this split: OvR AUC is undefined for it
        return None
    return float(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))


def scalar_metrics(logits: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    y_pred = logits.argmax(axis=-1)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_weighted": float(skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "precision_macro": float(skm.precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    auc = _roc_auc(y_true, softmax(logits))
    if auc is not None:
        out["roc_auc"] = auc
    return out


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer hook: scalars only (they go to the log and TensorBoard)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return scalar_metrics(np.asarray(logits), np.asarray(labels))


def full_report(logits: np.ndarray, y_true: np.ndarray, label_names: list[str]) -> dict:
    """Everything metrics.json holds for one split."""
    y_pred = logits.argmax(axis=-1)
    ids = list(range(len(label_names)))
    per_class = skm.f1_score(y_true, y_pred, labels=ids, average=None, zero_division=0)
    report = scalar_metrics(logits, y_true)
    report.update(
        {
            "num_examples": len(y_true),
            "per_class_f1": {name: float(f) for name, f in zip(label_names, per_class, strict=True)},
            "confusion_matrix": {
                "labels": label_names,
                "matrix": skm.confusion_matrix(y_true, y_pred, labels=ids).tolist(),
            },
            "classification_report": skm.classification_report(
                y_true, y_pred, labels=ids, target_names=label_names, output_dict=True, zero_division=0
            ),
        }
    )
    return report
