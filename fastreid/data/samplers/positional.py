"""The positional stream shared by the training samplers.

A training sampler describes one infinite *global* stream of global batches (``batch_size`` items
each, for all ranks together). Item ``j`` of global batch ``b`` sits at global position
``b * batch_size + j`` and carries a sample seed derived from ``(seed, position)`` only, which the
dataset uses to seed the augmentation. Each rank takes its own contiguous slice of every global
batch. So the stream, augmentation included, is a pure function of the seed and the position:
starting at iteration ``k`` needs no replay of earlier samples.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np
from torch.utils.data import Sampler

from fastreid.config import ConfigError

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, position: int) -> int:
    """A well-mixed 63-bit seed for the item at global ``position`` (splitmix64 finaliser)."""
    x = (seed * 0x9E3779B97F4A7C15 + position * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) >> 1


def epoch_rng(seed: int, epoch: int, tag: int) -> np.random.Generator:
    """An independent numpy generator for one epoch of one sampler kind."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, tag])))


class PositionalSampler(Sampler):
    """Base class: yields ``(index, sample_seed)`` for this rank, from iteration ``start_iter`` on.

    Subclasses implement :meth:`global_batches`, an iterator over global batches (arrays of
    ``batch_size`` dataset indices) starting at global batch ``start``.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0) -> None:
        if num_items <= 0:
            raise ValueError("The training set is empty: there is nothing to sample")
        if batch_size <= 0:
            raise ConfigError(f"SOLVER.IMS_PER_BATCH must be positive, got {batch_size}")
        if batch_size % world_size != 0:
            raise ConfigError(f"SOLVER.IMS_PER_BATCH ({batch_size}) must be divisible by the number of "
                              f"processes ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if seed < 0:
            raise ValueError(f"The sampler seed must be >= 0, got {seed}")
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter

    def global_batches(self, start: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        lo = self.rank * self.local_batch_size
        for b, batch in enumerate(self.global_batches(self.start_iter), start=self.start_iter):
            base = b * self.batch_size
            for j in range(lo, lo + self.local_batch_size):
                yield int(batch[j]), sample_seed(self.seed, base + j)


class TrainingSampler(PositionalSampler):
    """Plain shuffling: one fresh permutation of the whole set per epoch, epochs concatenated."""

    _TAG = 1

    def _permutation(self, epoch: int) -> np.ndarray:
        return epoch_rng(self.seed, epoch, self._TAG).permutation(self.num_items)

    def global_batches(self, start: int) -> Iterator[np.ndarray]:
        pos = start * self.batch_size
        epoch, offset = divmod(pos, self.num_items)
        perm = self._permutation(epoch)
        while True:
            out: List[np.ndarray] = []
            need = self.batch_size
            while need > 0:
                if offset == self.num_items:
                    epoch, offset = epoch + 1, 0
                    perm = self._permutation(epoch)
                take = min(need, self.num_items - offset)
                out.append(perm[offset:offset + take])
                offset += take
                need -= take
            yield np.concatenate(out)


class InferenceSampler(Sampler):
    """Every index once, in order, split into contiguous per-rank shards (rank order = dataset order)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        base, extra = divmod(size, world_size)
        self.begin = rank * base + min(rank, extra)
        self.end = self.begin + base + (1 if rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
