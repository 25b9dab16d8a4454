"""P x K identity samplers: every global batch holds P identities with K images each.

Under DDP each rank receives whole identities (its slice of the P), so ranks are disjoint within
a batch. Identities with fewer than K images are completed by sampling their images again.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence

import numpy as np

from fastreid.config import ConfigError

from .positional import PositionalSampler, epoch_rng


def group_by_identity(pids: Sequence) -> List[np.ndarray]:
    """Dataset indices grouped per identity, identities in first-seen order."""
    groups: Dict[object, List[int]] = defaultdict(list)
    for i, pid in enumerate(pids):
        groups[pid].append(i)
    return [np.asarray(v, dtype=np.int64) for v in groups.values()]


def draw_instances(rng: np.random.Generator, idxs: np.ndarray, k: int) -> np.ndarray:
    """``k`` images of one identity: distinct when it has at least ``k``, else all plus repeats."""
    if len(idxs) >= k:
        return rng.choice(idxs, size=k, replace=False)
    extra = rng.choice(idxs, size=k - len(idxs), replace=True)
    return rng.permutation(np.concatenate([idxs, extra]))


class _IdentitySampler(PositionalSampler):
    """Checks the P x K arithmetic and caches epoch plans (lists of global batches)."""

    _TAG = 0

    def __init__(self, pids: Sequence, batch_size: int, num_instances: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0) -> None:
        super().__init__(len(pids), batch_size, seed, rank, world_size, start_iter)
        if num_instances <= 0:
            raise ConfigError(f"DATALOADER.NUM_INSTANCE must be positive, got {num_instances}")
        if batch_size % num_instances != 0:
            raise ConfigError(f"SOLVER.IMS_PER_BATCH ({batch_size}) must be divisible by "
                              f"DATALOADER.NUM_INSTANCE ({num_instances}) for {type(self).__name__}")
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        if self.num_pids_per_batch % world_size != 0:
            raise ConfigError(
                f"SOLVER.IMS_PER_BATCH // DATALOADER.NUM_INSTANCE = {self.num_pids_per_batch} identities per "
                f"batch must be divisible by the number of processes ({world_size}) so that each process "
                f"gets whole identities")
        self.groups = group_by_identity(pids)
        if len(self.groups) < self.num_pids_per_batch:
            raise ConfigError(
                f"{type(self).__name__} needs at least SOLVER.IMS_PER_BATCH // DATALOADER.NUM_INSTANCE = "
                f"{self.num_pids_per_batch} identities, the training set has {len(self.groups)}")

    def epoch_plan(self, epoch: int) -> List[np.ndarray]:
        raise NotImplementedError

    def global_batches(self, start: int) -> Iterator[np.ndarray]:
        epoch = 0
        plan = self.epoch_plan(epoch)
        while start >= len(plan):  # skipping only builds index plans, never touches images
            start -= len(plan)
            epoch += 1
            plan = self.epoch_plan(epoch)
        while True:
            yield from plan[start:]
            start = 0
            epoch += 1
            plan = self.epoch_plan(epoch)


class NaiveIdentitySampler(_IdentitySampler):
    """Each epoch uses (about) every image once: an identity's shuffled images are cut into chunks
    of K, and each batch takes one chunk from each of P distinct identities picked at random among
    those with chunks left. Identities with many images therefore appear in more batches."""

    _TAG = 2

    def epoch_plan(self, epoch: int) -> List[np.ndarray]:
        rng = epoch_rng(self.seed, epoch, self._TAG)
        k, p = self.num_instances, self.num_pids_per_batch
        chunks: List[List[np.ndarray]] = []
        for idxs in self.groups:
            drawn = draw_instances(rng, idxs, k) if len(idxs) < k else rng.permutation(idxs)
            n = len(drawn) // k
            chunks.append([drawn[c * k:(c + 1) * k] for c in range(n)])
        avail = list(range(len(chunks)))
        batches: List[np.ndarray] = []
        while len(avail) >= p:
            picks = rng.choice(len(avail), size=p, replace=False)
            batches.append(np.concatenate([chunks[avail[i]].pop() for i in picks]))
            for i in sorted(picks, reverse=True):
                if not chunks[avail[i]]:
                    avail[i] = avail[-1]
                    avail.pop()
        return batches


class BalancedIdentitySampler(_IdentitySampler):
    """Each epoch visits every identity once (in random order), with K images each, so that all
    identities weigh the same whatever their number of images."""

    _TAG = 3

    def epoch_plan(self, epoch: int) -> List[np.ndarray]:
        rng = epoch_rng(self.seed, epoch, self._TAG)
        order = rng.permutation(len(self.groups))
        p = self.num_pids_per_batch
        return [np.concatenate([draw_instances(rng, self.groups[g], self.num_instances)
                                for g in order[b * p:(b + 1) * p]])
                for b in range(len(order) // p)]
