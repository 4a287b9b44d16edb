"""The training order (trainer.sampling): every epoch a permutation, a pure function of (seed, epoch);
`split` and `packed`: random batches, each sorted so split's micro-batches pad little; `bucketed`:
batches of similar lengths drawn from one bucket each; neither leaves the epoch in length order."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from trainer.sampling import (
    BUCKET_BATCHES,
    SeededLengthGroupedSampler,
    bucketed_indices,
    epoch_seed,
    split_indices,
)

BATCH = 8


@pytest.fixture
def lengths() -> list[int]:
    rng = random.Random(0)
    return [rng.randint(3, 120) for _ in range(1003)]  # not a multiple of the batch size


@pytest.mark.parametrize("batching", ["packed", "split", "bucketed", "megabatch"])
def test_each_epoch_is_a_permutation_and_a_function_of_seed_and_epoch(lengths, batching):
    sampler = SeededLengthGroupedSampler(lengths, BATCH, seed=42, batching=batching)
    first = sampler.order(0)
    assert sorted(first) == list(range(len(lengths)))
    torch.manual_seed(123)  # the global RNG plays no part
    assert SeededLengthGroupedSampler(lengths, BATCH, seed=42, batching=batching).order(0) == first
    sampler.set_epoch(1)
    assert list(iter(sampler)) == sampler.order(1) != first
    assert SeededLengthGroupedSampler(lengths, BATCH, seed=7, batching=batching).order(0) != first


def test_bucketed_batches_come_from_one_bucket_each_sorted_by_length(lengths):
    order = SeededLengthGroupedSampler(lengths, BATCH, seed=3, batching="bucketed").order(0)
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(epoch_seed(3, 0))).tolist()
    bucket_of = {index: position // (BUCKET_BATCHES * BATCH) for position, index in enumerate(perm)}
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    assert len(batches[-1]) == len(lengths) % BATCH  # the short batch is the last one
    for batch in batches:
        assert len({bucket_of[i] for i in batch}) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # out of memory shows at the first step


def padding(order: list[int], lengths: list[int], size: int = BATCH) -> int:
    """Pad tokens when `order` is cut into batches of `size` and each is padded to its longest text."""
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


def test_bucketed_pads_little_and_leaves_the_batches_in_random_order(lengths):
    bucketed = SeededLengthGroupedSampler(lengths, BATCH, seed=1, batching="bucketed").order(0)
    megabatch = SeededLengthGroupedSampler(lengths, BATCH, seed=1, batching="megabatch").order(0)
    shuffled = random.Random(1).sample(range(len(lengths)), len(lengths))
    assert padding(bucketed, lengths) < padding(shuffled, lengths) / 3

    def descending(order: list[int]) -> float:
        """Share of batches no longer than the batch before them (about 0.5: batches in random order)."""
        tops = [max(lengths[i] for i in order[j : j + BATCH]) for j in range(0, len(order), BATCH)]
        return sum(b <= a for a, b in itertools.pairwise(tops)) / (len(tops) - 1)

    assert descending(megabatch) > 0.9  # HF's megabatches: long to short, megabatch after megabatch
    assert 0.35 < descending(bucketed) < 0.65


STEP = 32  # texts per optimizer step
MICRO = 8  # texts per micro-batch


@pytest.mark.parametrize("batching", ["split", "packed"])
def test_split_and_packed_steps_hold_random_batches_sorted_by_length(lengths, batching):
    """Each optimizer step's texts are one slice of the seeded permutation (a random batch, as without
    length grouping), sorted longest first; the short slice is the last step. Packed batches are the
    same batches (then packed into rows, trainer.packing)."""
    order = SeededLengthGroupedSampler(lengths, STEP, seed=5, batching=batching).order(0)
    perm = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(epoch_seed(5, 0))).tolist()
    random_batches = {frozenset(perm[i : i + STEP]) for i in range(0, len(perm), STEP)}
    steps = [order[i : i + STEP] for i in range(0, len(order), STEP)]
    assert {frozenset(step) for step in steps} == random_batches
    assert len(steps[-1]) == len(lengths) % STEP
    for step in steps:
        assert [lengths[i] for i in step] == sorted((lengths[i] for i in step), reverse=True)
    assert lengths[steps[0][0]] == max(lengths)  # out of memory shows at the first step


def test_packed_deals_a_step_to_its_pieces_in_turn(lengths):
    """With a step of 2 pieces (2 processes, or 2 accumulated batches) each piece gets every other text
    of the step's sorted random batch: the step is the one-piece random batch, and the pieces' tokens
    differ by less than one text's."""
    one = SeededLengthGroupedSampler(lengths, STEP, seed=4, batching="packed").order(0)
    two = SeededLengthGroupedSampler(lengths, STEP, seed=4, batching="packed", pieces=2).order(0)
    assert sorted(two) == list(range(len(lengths)))
    full = len(lengths) - len(lengths) % STEP
    for start in range(0, full, STEP):
        step = two[start : start + STEP]
        assert set(step) == set(one[start : start + STEP])
        first, second = (sum(lengths[i] for i in piece) for piece in (step[: STEP // 2], step[STEP // 2 :]))
        assert 0 <= first - second <= max(lengths[i] for i in step)
    assert two[full:] == one[full:]  # the short last step is left as it is


def test_split_micro_batches_stay_within_the_length_budget(lengths):
    """The length budget: a micro-batch pads to its own longest text, so after the sort each one spans
    a quarter of its step's lengths; the padding is well under that of the random batches it splits."""
    split = SeededLengthGroupedSampler(lengths, STEP, seed=2, batching="split").order(0)
    shuffled = random.Random(2).sample(range(len(lengths)), len(lengths))
    assert padding(split, lengths, MICRO) < padding(shuffled, lengths, STEP) / 3
    for start in range(0, len(split), STEP):
        step = split[start : start + STEP]
        for m in range(0, len(step), MICRO):
            micro = [lengths[i] for i in step[m : m + MICRO]]
            # no text of a later micro-batch is longer than this one's shortest
            assert all(lengths[i] <= min(micro) for i in step[m + MICRO :])


def test_split_leaves_the_steps_in_random_order(lengths):
    order = SeededLengthGroupedSampler(lengths, STEP, seed=9, batching="split").order(0)
    tops = [lengths[order[j]] for j in range(0, len(order) - len(lengths) % STEP, STEP)]
    falling = sum(b <= a for a, b in itertools.pairwise(tops)) / (len(tops) - 1)
    assert 0.3 < falling < 0.7


def test_a_tiny_epoch_still_works():
    assert sorted(bucketed_indices([5, 1, 3], 8, torch.Generator().manual_seed(0))) == [0, 1, 2]
    assert bucketed_indices([], 8, torch.Generator().manual_seed(0)) == []
    assert split_indices([5, 1, 3], 8, torch.Generator().manual_seed(0)) == [0, 2, 1]
    assert split_indices([], 8, torch.Generator().manual_seed(0)) == []


def test_an_unknown_batching_is_refused():
    with pytest.raises(ValueError, match="packed, split, bucketed, megabatch"):
        SeededLengthGroupedSampler([1, 2], 2, seed=0, batching="sorted")
