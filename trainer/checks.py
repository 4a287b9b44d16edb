"""Checks that need more than the config file: the model's position limit and the classes a metric
needs. `trainer.run.prepare` calls `check_before_training` after the data and the tokenizer are loaded
and before the output folder is touched, so each problem is one line and nothing is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainer.errors import UserError

if TYPE_CHECKING:
    from trainer.config import Config
    from trainer.data import Splits

# Position ids of these models start after the padding index (RoBERTa's scheme): of
# max_position_embeddings (514) only max_position_embeddings - pad_token_id - 1 (512) are usable.
PADDING_OFFSET_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "roberta-prelayernorm", "mpnet"}
)
POSITION_KEYS = ("max_position_embeddings", "n_positions")
"where transformers' configs keep the number of learned positions"


def position_limit(model_config) -> int | None:
    """The longest input the model can embed, or None when its positions are not a fixed table."""
    if getattr(model_config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        return None
    limit = next((getattr(model_config, k) for k in POSITION_KEYS if getattr(model_config, k, None)), None)
    if limit is None:
        return None
    if getattr(model_config, "model_type", "") in PADDING_OFFSET_MODELS:
        limit -= (getattr(model_config, "pad_token_id", None) or 0) + 1
    return int(limit)


def check_max_length(model_name: str, max_length: int) -> None:
    """model.max_length must fit the model's position table (read from its config, no weights)."""
    from transformers import AutoConfig

    from trainer.modeling import resolve_model_name

    resolved = resolve_model_name(model_name)
    try:
        model_config = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the config of model.name {model_name!r}: {first}") from None
    limit = position_limit(model_config)
    if limit is not None and max_length > limit:
        raise UserError(
            f"model.max_length {max_length} is above the position limit of model {model_name!r} "
            f"({limit} tokens): set model.max_length to {limit} or less, e.g. --set model.max_length={limit}"
        )


def check_metric_classes(metric: str, splits: Splits) -> None:
    """ROC AUC is undefined on a validation split that lacks a class; the best-model choice needs it."""
    if metric != "eval_roc_auc":
        return
    present = set(splits.val["label"])
    absent = [name for i, name in enumerate(splits.labels) if i not in present]
    if absent:
        shown = ", ".join(repr(a) for a in absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise UserError(
            f"train.early_stopping.metric is eval_roc_auc, but the validation split has no rows of "
            f"{shown}, so ROC AUC is undefined: choose another metric "
            "(e.g. --set train.early_stopping.metric=eval_f1_macro) or give every class validation rows "
            "(more rows, a larger data.val_size, or a validation file with every class)"
        )


def check_before_training(cfg: Config, splits: Splits) -> None:
    check_metric_classes(cfg.train.early_stopping.metric, splits)
    check_max_length(cfg.model.name, cfg.model.max_length)
