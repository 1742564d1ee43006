"""The training data order: a function of (seed, batch number), sharded across ranks, resumable."""

import random
from itertools import islice

import numpy as np
import torch

from esseg.engine.data import SeededSamples, ShardSampler, TrainBatchSampler, seeded_rng


def _take(sampler, n):
    return list(islice(iter(sampler), n))


def test_resumed_sampler_continues_the_same_sequence():
    full = _take(TrainBatchSampler(10, 3, seed=1), 9)  # 3 batches per epoch, 3 epochs
    assert _take(TrainBatchSampler(10, 3, seed=1, start=4), 5) == full[4:]
    assert full[:3] != full[3:6]  # a new order every epoch
    assert _take(TrainBatchSampler(10, 3, seed=2), 3) != full[:3]


def test_epoch_covers_distinct_samples_across_ranks():
    per_rank = [_take(TrainBatchSampler(13, 2, seed=0, rank=r, world_size=3), 2) for r in range(3)]
    indices = [i for batches in per_rank for batch in batches for i, _ in batch]
    assert len(indices) == 12 and len(set(indices)) == 12  # 2 batches x 2 x 3 ranks, no repeats
    seeds = {s for batches in per_rank for batch in batches for _, s in batch}
    assert len(seeds) == 12


def test_shard_sampler_has_no_padding():
    shards = [list(ShardSampler(7, r, 2)) for r in range(2)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]


def test_seeded_samples_are_reproducible_and_leave_global_rng_alone():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return random.random(), float(np.random.rand()), float(torch.rand(()))

    ds = SeededSamples(Noisy())
    torch.manual_seed(0)
    random.seed(0)
    before = (torch.get_rng_state(), random.getstate())
    assert ds[(1, 123)] == ds[(1, 123)] != ds[(1, 124)]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    with seeded_rng(5):
        a = torch.rand(3)
    with seeded_rng(5):
        assert torch.equal(a, torch.rand(3))
