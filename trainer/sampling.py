"""The order of the training examples: length-aware batches whose order depends on the run's seed and
the epoch only.

HF's `LengthGroupedSampler` draws its permutation from the global torch RNG when an epoch's iterator is
made; a resumed run makes it at another point of the RNG stream than an uninterrupted one, so the two
drift apart after the resume point. Here every epoch's order comes from its own generator seeded with
(seed, epoch), and the Trainer's `set_epoch` tells the sampler which epoch it is in (also after a resume
that starts mid-epoch).

Four groupings (`train.batching`):
- `packed` (the default: README "Speed"): random batches, exactly as without length grouping (`split`'s
  steps); the collator then lays each batch's texts end to end in rows (`trainer.packing`). When a step
  is several of the loader's batches (accumulation, processes), its texts are dealt to them in turn, so
  each holds long and short texts alike (no process waits on another's long texts).
- `split`: random batches, exactly as without length grouping; each one
  sorted by length and cut into micro-batches of `train.micro_batch_size` texts that accumulate into
  one optimizer step. The gradient is the random batch's (the same texts, the same mean loss), so the
  optimisation is that of random batches, while each micro-batch pads only to its own longest text.
- `bucketed`: a seeded permutation cut into buckets of `train.bucket_batches` batches (8), each bucket
  sorted by length and cut into batches, then the batches of the whole epoch shuffled. Batches hold
  texts of similar length (little padding), but the epoch is not in length order.
- `megabatch`: HF's grouping unchanged: megabatches of up to 50 batches, each sorted by length, the
  longest batch first, the batches left in that order. On a small data set a megabatch is nearly the
  whole epoch, so the epoch runs from long texts to short ones (one seed in three collapsed on an
  imbalanced set in issue 14's measurement).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from trainer.config import BATCHINGS

BUCKET_BATCHES = 8
"batches per length-sorted bucket in `bucketed` batching (train.bucket_batches' default)"


def epoch_seed(seed: int, epoch: int) -> int:
    """One generator seed per (run seed, epoch); distinct for the seeds and epochs a run uses."""
    return seed * 1_000_003 + epoch


def split_indices(lengths: Sequence[int], group_size: int, generator: torch.Generator) -> list[int]:
    """A permutation of range(len(lengths)) whose consecutive `group_size` slices are random batches
    (one optimizer step's texts), each sorted by length, longest first, so that cutting it into
    micro-batches puts texts of similar length together. The group holding the longest text comes first
    (an out-of-memory error shows at the first step); the last (short) group stays last."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    groups = [
        sorted(perm[start : start + group_size], key=lambda i: lengths[i], reverse=True)
        for start in range(0, len(perm), group_size)
    ]
    if groups:
        full = len(groups) - (1 if len(groups[-1]) < group_size and len(groups) > 1 else 0)
        longest = max(range(len(groups)), key=lambda g: lengths[groups[g][0]])
        if longest < full:
            groups[0], groups[longest] = groups[longest], groups[0]
    return [i for group in groups for i in group]


def bucketed_indices(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, bucket_batches: int = BUCKET_BATCHES
) -> list[int]:
    """A permutation of range(len(lengths)) whose consecutive `batch_size` slices are the batches: each
    from one bucket of `bucket_batches * batch_size` random texts sorted by length, in shuffled order.
    The last (short) batch stays last; the batch holding the longest text comes first (an out-of-memory
    error shows at the first step, as with HF's grouping)."""
    n = len(lengths)
    perm = torch.randperm(n, generator=generator).tolist()
    size = bucket_batches * batch_size
    flat: list[int] = []
    for start in range(0, n, size):
        flat.extend(sorted(perm[start : start + size], key=lambda i: lengths[i], reverse=True))
    batches = [flat[i : i + batch_size] for i in range(0, n, batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return [i for batch in batches + tail for i in batch]


def dealt_indices(order: list[int], group_size: int, pieces: int) -> list[int]:
    """`order` with each full `group_size` slice dealt into `pieces` consecutive parts in turn (the
    slice's 1st, (pieces+1)th, ... text to the first part, and so on), so that a slice sorted by length
    gives parts of alike lengths. A short last slice stays as it is."""
    if pieces < 2:
        return order
    out: list[int] = []
    for start in range(0, len(order), group_size):
        group = order[start : start + group_size]
        if len(group) == group_size:
            group = [group[k] for part in range(pieces) for k in range(part, group_size, pieces)]
        out.extend(group)
    return out


class SeededLengthGroupedSampler(Sampler[int]):
    """`batch_size` is the texts of one optimizer step (the Trainer's per-device batch x `pieces`, the
    loader's batches per step: its accumulation steps, for `split` and `packed` x the processes too):
    `split` sorts within it, `packed` deals it out to its pieces, `bucketed` and `megabatch` group batches
    of it."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        batching: str = "packed",
        bucket_batches: int = BUCKET_BATCHES,
        pieces: int = 1,
    ):
        if batching not in BATCHINGS:  # config validation names the key; this guards direct use
            raise ValueError(f"batching must be one of {', '.join(BATCHINGS)}, got {batching!r}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.batching = batching
        self.bucket_batches = bucket_batches
        self.pieces = pieces
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        if self.batching == "split":
            return split_indices(self.lengths, self.batch_size, generator)
        if self.batching == "packed":
            return dealt_indices(
                split_indices(self.lengths, self.batch_size, generator), self.batch_size, self.pieces
            )
        if self.batching == "bucketed":
            return bucketed_indices(self.lengths, self.batch_size, generator, self.bucket_batches)
        return get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))


class LengthSortedSampler(Sampler[int]):
    """Evaluation and prediction order: longest text first (a stable sort), so each batch pads to about
    its own length. `restore` puts results made in this order back in the dataset's order."""

    def __init__(self, lengths: Sequence[int]):
        self.indices = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def restore(self, rows):
        """Rows (a numpy array, first axis in sampler order) back in dataset order."""
        import numpy as np

        inverse = np.empty(len(self.indices), dtype=np.int64)
        inverse[self.indices] = np.arange(len(self.indices))
        return rows[inverse]


def example_lengths(dataset, length_column: str = "length", input_name: str = "input_ids") -> list[int]:
    """Token counts of a tokenized `datasets.Dataset` (its length column where `data.tokenize` made one)."""
    if length_column in dataset.column_names:
        return list(dataset[length_column])
    return [len(ids) for ids in dataset[input_name]]
