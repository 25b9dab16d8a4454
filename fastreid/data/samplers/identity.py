"""P x K identity samplers: every global batch holds P identities with K images each.

Under DDP each rank receives whole identities (its slice of the P), so ranks are disjoint within
a batch. Identities with fewer than K images are completed by drawing their images again.
Epoch plans are built with vectorised numpy (a fraction of a second for DeepPatent's 255k
images), because resuming at iteration k rebuilds the plans of all earlier epochs.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fastreid.config import ConfigError

from .positional import PositionalSampler, epoch_rng


def group_by_identity(pids: Sequence) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dataset indices grouped per identity (identities in first-seen order).

    Returns:
        ``(flat, starts, sizes)``: ``flat[starts[g]:starts[g] + sizes[g]]`` are the indices of group g.
    """
    codes_of = {}
    codes = np.fromiter((codes_of.setdefault(p, len(codes_of)) for p in pids), dtype=np.int64, count=len(pids))
    flat = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=len(codes_of))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return flat, starts, sizes


def shuffle_within_groups(rng: np.random.Generator, flat: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``flat`` with each group's run of indices randomly permuted in place of the run."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    return flat[np.lexsort((rng.random(len(flat)), group))]


def chunk_matrix(rng: np.random.Generator, shuffled: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                 groups: np.ndarray, chunk: np.ndarray, k: int) -> np.ndarray:
    """Rows of K indices: chunk ``chunk[i]`` of group ``groups[i]`` in the shuffled order; a group
    with fewer than K images fills its chunk 0 with random repeats of its images."""
    n = sizes[groups][:, None]
    pos = chunk[:, None] * k + np.arange(k)[None, :]
    repeat = np.floor(rng.random(pos.shape) * n).astype(np.int64)
    return shuffled[starts[groups][:, None] + np.where(pos < n, pos, repeat)]


class _IdentitySampler(PositionalSampler):
    """Checks the P x K arithmetic; subclasses build one epoch's global batches at a time."""

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
        self.flat, self.starts, self.sizes = group_by_identity(pids)
        if len(self.sizes) < self.num_pids_per_batch:
            raise ConfigError(
                f"{type(self).__name__} needs at least SOLVER.IMS_PER_BATCH // DATALOADER.NUM_INSTANCE = "
                f"{self.num_pids_per_batch} identities, the training set has {len(self.sizes)}")

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """The epoch's global batches, shape ``(num_batches, batch_size)``."""
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
    """Each epoch uses (about) every image once. Every identity's shuffled images are cut into
    chunks of K (one chunk, completed by repeats, when it has fewer). The first chunks of all
    identities are dealt into batches of P in random order, then the second chunks of the
    identities that have one, and so on (a round's last incomplete batch is dropped); finally the
    batches are shuffled. No batch holds an identity twice; identities with many images appear in
    more batches."""

    _TAG = 2

    def epoch_plan(self, epoch: int) -> np.ndarray:
        rng = epoch_rng(self.seed, epoch, self._TAG)
        k, p = self.num_instances, self.num_pids_per_batch
        shuffled = shuffle_within_groups(rng, self.flat, self.sizes)
        n_chunks = np.maximum(self.sizes // k, 1)
        groups = np.repeat(np.arange(len(self.sizes)), n_chunks)
        chunk = np.arange(len(groups)) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        rows = chunk_matrix(rng, shuffled, self.starts, self.sizes, groups, chunk, k)
        order = np.lexsort((rng.random(len(groups)), chunk))  # by round, random within a round
        per_round = np.bincount(chunk)
        ends = np.cumsum(per_round)
        keep: List[np.ndarray] = [order[e - r:e - r + (r // p) * p] for r, e in zip(per_round, ends)]
        batches = rows[np.concatenate(keep)].reshape(-1, p * k)
        return batches[rng.permutation(len(batches))]


class BalancedIdentitySampler(_IdentitySampler):
    """Each epoch visits the identities once, in random order (the last ``n_ids % P`` dropped), with K
    images each, camera-aware as in the DIRA challenge code: a random anchor image, then K - 1 images
    of the identity taken from *other cameras* when it has any, else from its other images. The K - 1
    are distinct when there are at least K candidates and drawn with replacement otherwise (the
    original's threshold); an identity with a single image repeats it K times.

    ``camids`` (one per item; default all 0) make the choice camera-aware; DeepPatent has one camera,
    so its K - 1 images are the anchor's siblings.
    """

    _TAG = 3

    def __init__(self, pids: Sequence, batch_size: int, num_instances: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0, camids: Optional[Sequence] = None) -> None:
        super().__init__(pids, batch_size, num_instances, seed, rank, world_size, start_iter)
        if camids is not None and len(camids) != len(pids):
            raise ValueError(f"BalancedIdentitySampler: {len(camids)} camera ids for {len(pids)} items")
        cams = np.zeros(len(pids), np.int64) if camids is None else np.asarray(camids)
        self.cams_flat = cams[self.flat]

    def epoch_plan(self, epoch: int) -> np.ndarray:
        rng = epoch_rng(self.seed, epoch, self._TAG)
        k, p = self.num_instances, self.num_pids_per_batch
        order = rng.permutation(len(self.sizes))[: (len(self.sizes) // p) * p]
        rows = balanced_rows(rng, self.flat, self.starts[order], self.sizes[order], self.cams_flat, k)
        return rows.reshape(-1, p * k)


def balanced_rows(rng: np.random.Generator, flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                  cams_flat: np.ndarray, k: int) -> np.ndarray:
    """One row of K dataset indices per group (``flat[starts[g]:starts[g] + sizes[g]]``), vectorised.

    Column 0 is a uniformly drawn anchor; columns 1..K-1 come from the group's images of another
    camera than the anchor's, or, when there are none, from its images other than the anchor.
    """
    n = len(sizes)
    anchor = starts + np.floor(rng.random(n) * sizes).astype(np.int64)
    member_group = np.repeat(np.arange(n), sizes)
    offsets = np.arange(len(member_group)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    member = np.repeat(starts, sizes) + offsets
    other_cam = cams_flat[member] != cams_flat[anchor][member_group]
    n_other_cam = np.bincount(member_group, weights=other_cam, minlength=n).astype(np.int64)
    by_cam = n_other_cam > 0
    candidate = np.where(by_cam[member_group], other_cam, member != anchor[member_group])
    count = np.where(by_cam, n_other_cam, sizes - 1)
    keys = rng.random(len(member))
    cand = np.nonzero(candidate)[0]
    cand = cand[np.lexsort((keys[cand], member_group[cand]))]  # grouped, random order within a group
    cand = np.append(cand, 0)  # keeps the gather below in range for groups without candidates
    first = np.cumsum(count) - count
    drawn = np.floor(rng.random((n, k - 1)) * np.maximum(count, 1)[:, None]).astype(np.int64)
    col = np.where((count >= k)[:, None], np.arange(k - 1)[None, :], drawn)
    pos = np.minimum(first[:, None] + col, len(cand) - 1)
    others = np.where((count > 0)[:, None], member[cand[pos]], anchor[:, None])
    return flat[np.concatenate([anchor[:, None], others], axis=1)]
