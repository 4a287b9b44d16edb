"""The order of the training examples: length-grouped batches whose order depends on the run's seed and
the epoch only.

HF's `LengthGroupedSampler` draws its permutation from the global torch RNG when an epoch's iterator is
made; a resumed run makes it at another point of the RNG stream than an uninterrupted one, so the two
drift apart after the resume point. Here every epoch's order comes from its own generator seeded with
(seed, epoch), and the Trainer's `set_epoch` tells the sampler which epoch it is in (also after a resume
that starts mid-epoch). The grouping itself is HF's, unchanged: a seeded permutation cut into
megabatches of up to 50 batches, each sorted by length, the longest batch first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def epoch_seed(seed: int, epoch: int) -> int:
    """One generator seed per (run seed, epoch); distinct for the seeds and epochs a run uses."""
    return seed * 1_000_003 + epoch


class SeededLengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))


def example_lengths(dataset, length_column: str = "length", input_name: str = "input_ids") -> list[int]:
    """Token counts of a tokenized `datasets.Dataset` (its length column where `data.tokenize` made one)."""
    if length_column in dataset.column_names:
        return list(dataset[length_column])
    return [len(ids) for ids in dataset[input_name]]
