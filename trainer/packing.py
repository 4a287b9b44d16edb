"""Packed training batches (`train.batching: packed`, the default; README "Speed").

A random batch's texts are laid end to end in rows of at most `model.max_length` tokens (first-fit
decreasing), with no padding between them. Each text attends to its own tokens only (a block-diagonal
attention mask), its position ids restart at 0, and the classifier head reads each text's first token
(a forward hook on the encoder hands the head one `[CLS]` vector per text instead of one per row). The
model computes, to float rounding, what it computes for each text on its own: the loss and gradient are
the random batch's, from one forward and backward pass over the real tokens only.

    packing_problem(model)          why this model cannot train packed, or None
    pack_rows(lengths, row_length)  which texts share a row
    row_width(lengths, rows)        the packed batch's width
    PackingCollator                 a list of tokenized texts -> one packed batch
    first_tokens(model, index)      while active, the encoder's output is each text's first token
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

PACKED_INDEX = "packed_first_token"
"the batch key holding each text's first-token position in the flattened rows (not a model input)"

# Model types whose embeddings take position ids counted from 0 and whose classifier reads the first
# token of the encoder's output: BERT (pooler on [CLS]) and DistilBERT (pre_classifier on [CLS]).
POSITIONS_FROM_ZERO = ("bert", "distilbert")
MASKS = ("sdpa", "eager")
"attention implementations that take the 4D block-diagonal mask as it is (flash-attention kernels do not)"


def encoder_of(model) -> torch.nn.Module | None:
    """The module whose output is the last hidden state: BERT's `encoder`, DistilBERT's `transformer`."""
    base = getattr(model, "base_model", model)
    return getattr(base, "encoder", None) or getattr(base, "transformer", None)


def packing_problem(model) -> str | None:
    """Why `model` cannot train on packed batches (one line), or None when it can."""
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in POSITIONS_FROM_ZERO:
        return f"model type {kind!r} is not one packing knows ({', '.join(POSITIONS_FROM_ZERO)})"
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in MASKS:
        return (
            f"attention implementation {attention!r} does not take a block-diagonal mask (sdpa or eager do)"
        )
    if encoder_of(model) is None:
        return f"no encoder module found in {type(model).__name__}"
    return None


def pack_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Texts (by index) per row: first-fit decreasing into rows of at most `row_length` tokens, so a
    batch needs few rows and little padding. A text longer than a row gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(row_length - lengths[i])
    return rows


def row_width(lengths: Sequence[int], rows: list[list[int]]) -> int:
    """The packed batch's width: the tokens of its fullest row."""
    return max(sum(lengths[i] for i in row) for row in rows)


class PackingCollator:
    """Tokenized texts (dicts with `input_ids`, optionally `token_type_ids`, and `labels`) -> one packed
    batch: `input_ids`, `position_ids` (and `token_type_ids`) of shape (rows, width), where width is the
    fullest row's tokens; `attention_mask` of shape (rows, 1, width, width) letting each token see its own
    text only (bool for sdpa, additive float for eager attention; a padding token sees itself, so no
    softmax row is empty); `labels` per text; and `PACKED_INDEX`, each text's first token in the
    flattened rows, in the order the texts came."""

    def __init__(self, row_length: int, pad_token_id: int, additive_mask: bool = False):
        self.row_length = row_length
        self.pad_token_id = pad_token_id
        self.additive_mask = additive_mask

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        rows = pack_rows(lengths, self.row_length)
        width = row_width(lengths, rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        types = "token_type_ids" in features[0]
        token_type_ids = torch.zeros(shape if types else (0, 0), dtype=torch.long)
        visible = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1)
        first = torch.empty(len(features), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                end = start + lengths[i]
                input_ids[r, start:end] = torch.as_tensor(features[i]["input_ids"])
                position_ids[r, start:end] = torch.arange(lengths[i])
                if types:
                    token_type_ids[r, start:end] = torch.as_tensor(features[i]["token_type_ids"])
                visible[r, 0, start:end, start:end] = True
                first[i] = r * width + start
                start = end
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": self._mask(visible)}
        if types:
            batch["token_type_ids"] = token_type_ids
        if "labels" in features[0]:
            batch["labels"] = torch.as_tensor([f["labels"] for f in features])
        batch[PACKED_INDEX] = first
        return batch

    def _mask(self, visible: torch.Tensor) -> torch.Tensor:
        if not self.additive_mask:
            return visible
        return torch.zeros(visible.shape).masked_fill_(~visible, torch.finfo(torch.float32).min)


def _first_token_hook(index: torch.Tensor):
    def hook(module, args, output):
        hidden = output[0]
        first = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index.to(hidden.device)).unsqueeze(1)
        if isinstance(output, tuple):
            return (first, *output[1:])
        output.last_hidden_state = first  # a ModelOutput: its [0] follows the attribute
        return output

    return hook


@contextmanager
def first_tokens(model, index: torch.Tensor) -> Iterator[None]:
    """While active, `model`'s encoder returns (texts, 1, hidden): the hidden state of each text's first
    token, in the batch's text order, so the classifier head (which reads position 0) scores each text."""
    handle = encoder_of(model).register_forward_hook(_first_token_hook(index))
    try:
        yield
    finally:
        handle.remove()
