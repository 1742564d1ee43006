"""Datasets and loaders for training and evaluation, with a data order that resumes exactly.

Training draws *global batches*: batch ``b`` (counting micro-batches from the start of the run)
belongs to epoch ``b // batches_per_epoch``, whose order is a permutation seeded by
``(seed, epoch)``, split across ranks like ``DistributedSampler``. Every sample is loaded with
the python/numpy/torch RNGs seeded by ``(seed, epoch, index)``, so its random augmentation does
not depend on which worker loads it or where the run was resumed. A run resumed at iteration
``i`` simply starts at batch ``i * accum_steps``: nothing is loaded twice and nothing is skipped.

With ``num_workers > 0`` a dataset error raised in a worker reaches the caller as the same
one-line :class:`~esseg.errors.EssegError`, without the worker traceback torch adds to it, and
the workers ignore SIGINT (a Ctrl-C reaches the whole process group): the main process decides
when to stop and saves first (see ``engine.train``); workers exit when it does. They keep the
default SIGTERM, with which the main process (and multiprocessing at exit) stops them.
Evaluation batches may mix image sizes: such a batch comes as lists and is predicted image by image.
"""

from __future__ import annotations

import contextlib
import random
import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from esseg.data import build_dataset
from esseg.data.transforms import build_transforms
from esseg.engine.config import Config, crop_hw, short_repr
from esseg.errors import ConfigError, DatasetError, EssegError


def build_split(cfg: Config, split: str, train: bool):
    """The dataset ``cfg.data.dataset`` for ``split`` with the train or validation transforms."""
    d = cfg.data
    options = d.options if train else {**d.options, **d.val_options}
    try:
        dataset = build_dataset(d.dataset, root=d.root, split=split, transforms=None, **options)
    except TypeError as err:
        raise ConfigError(f"data.options {short_repr(options)} not accepted by dataset {d.dataset!r}: {err}") from None
    if d.crop_size is not None:
        # built after the dataset: ignore_index (the label of padded pixels) may depend on its options
        dataset.transforms = build_transforms(
            train, crop_hw(d.crop_size), dataset.ignore_index, scale_range=tuple(d.scale_range), flip=d.flip,
            color_jitter=d.color_jitter, val_mode=d.val_mode,
        )
    if len(dataset) == 0:
        raise DatasetError(f"dataset {d.dataset!r} split {split!r} is empty (root={d.root})")
    return dataset


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Seed python, numpy and torch (CPU) RNGs inside the block; restore the outer states after."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class SeededSamples(Dataset):
    """Wraps a dataset: item ``(index, seed)`` loads ``dataset[index]`` under :func:`seeded_rng`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with seeded_rng(seed):
            return self.dataset[index]


def _seed_of(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


class TrainBatchSampler(Sampler):
    """Endless batches of ``(index, sample_seed)`` for one rank, starting at global batch ``start``.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch and rank.
        seed: run seed; epoch ``e``'s order is a permutation seeded by ``(seed, e)``.
        rank, world_size: this process's shard (every rank gets ``batches_per_epoch`` batches).
        start: first global batch to yield (``iteration * accum_steps`` on resume).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.batches_per_epoch = num_samples // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training set has {num_samples} samples, fewer than one global batch "
                f"(train.batch_size={batch_size} x {world_size} processes); lower train.batch_size"
            )

    def _epoch_shard(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_of(self.seed, epoch))
        order = torch.randperm(self.num_samples, generator=g)
        used = order[: self.batches_per_epoch * self.batch_size * self.world_size]
        return used[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list]:
        b = self.start
        epoch, shard = -1, None
        while True:
            e, pos = divmod(b, self.batches_per_epoch)
            if e != epoch:
                epoch, shard = e, self._epoch_shard(e)
            indices = shard[pos * self.batch_size : (pos + 1) * self.batch_size].tolist()
            yield [(i, _seed_of(self.seed, epoch, i)) for i in indices]
            b += 1


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` in order: every sample exactly once over all ranks
    (unlike ``DistributedSampler``, no padding duplicates, so metrics equal a single-process run)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_same_size(batch: list) -> list:
    """``default_collate`` of ``(image, label)`` pairs; samples of different sizes -> ConfigError."""
    sizes = sorted({tuple(image.shape[-2:]) for image, _ in batch})
    if len(sizes) > 1:
        shown = " and ".join("x".join(map(str, s)) for s in sizes[:2])
        raise ConfigError(
            f"training samples differ in size ({shown}) and data.crop_size is not set: pass --crop-size S "
            f"(e.g. 512) or set data.crop_size, or train with train.batch_size=1"
        )
    return default_collate(batch)
def _worker_message(message: str, exc_type: type) -> str:
    """The original message inside torch's "Caught X in DataLoader worker process N. Original Traceback ..."."""
    if "in DataLoader worker process" not in message:
        return message
    lines = message.rstrip().splitlines()
    prefixes = (f"{exc_type.__module__}.{exc_type.__qualname__}: ", f"{exc_type.__qualname__}: ")
    for i in range(len(lines) - 1, -1, -1):
        for prefix in prefixes:
            if lines[i].startswith(prefix):
                return " ".join([lines[i][len(prefix):], *lines[i + 1:]]).strip()
    return message


def _ignore_sigint(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EssegLoader(DataLoader):
    """A DataLoader whose worker processes raise esseg's errors as one line, like the main process,
    and leave a Ctrl-C (SIGINT) to the main process."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("worker_init_fn", _ignore_sigint)
        super().__init__(*args, **kwargs)

    def __iter__(self):
        try:
            yield from super().__iter__()
        except EssegError as err:
            message = _worker_message(str(err), type(err))
            if message == str(err):
                raise
            raise type(err)(message) from None


def eval_collate(batch: list) -> tuple:
    """Stack ``(image, label)`` samples into ``(B, 3, H, W), (B, H, W)``; samples of different sizes
    are returned as two lists instead (evaluation then predicts them one by one)."""
    if len({(tuple(image.shape), tuple(label.shape)) for image, label in batch}) == 1:
        return default_collate(batch)
    images, labels = zip(*batch)
    return list(images), list(labels)


def train_loader(dataset, batch_size: int, seed: int, rank: int, world_size: int, start_batch: int,
                 num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """An endless training loader starting at global batch ``start_batch`` (see module docstring)."""
    sampler = TrainBatchSampler(len(dataset), batch_size, seed, rank, world_size, start_batch)
    return EssegLoader(
        SeededSamples(dataset), batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_same_size,
        generator=torch.Generator().manual_seed(seed),  # keeps the global torch RNG untouched
    )


def eval_loader(dataset, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """This rank's share of ``dataset`` in order, every sample exactly once over all ranks (batches
    of mixed image sizes as lists, see :func:`eval_collate`)."""
    return EssegLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size), collate_fn=eval_collate,
        num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
        generator=torch.Generator(),
    )


__all__ = ["EssegLoader", "SeededSamples", "eval_collate", "ShardSampler", "TrainBatchSampler", "build_split", "eval_loader", "seeded_rng", "train_loader"]
