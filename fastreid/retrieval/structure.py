"""A search index's features and faiss structure at scale: built shard by shard, searched from disk.

:class:`StoredFeatures` is the prepared database as it lies on disk, memory-mapped: the shards, or
``dba.npy`` when DBA rewrote them. :func:`build_structure` builds an IVF / IVF-PQ structure without
holding every feature: rank 0 trains it on the seeded sample (:meth:`FaissIndex.training_rows`, the
rows the in-memory build samples), every process adds its own contiguous part of the shards to its
copy of the trained, empty structure and writes it as a part file, and rank 0 appends the parts'
inverted lists in order (:meth:`FaissIndex.merge`). The result is the structure
``FaissIndex(all features)`` builds, byte for byte. A ``flat`` index gets no faiss file (it would
repeat the shards in float32): :func:`exact_search` scores the stored features shard by shard.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from fastreid.evaluation.query_expansion import weighted_neighbour_mean
from fastreid.evaluation.search import FaissIndex, faiss, knn, merge_topk, normalize
from fastreid.utils import comm

from . import store

logger = logging.getLogger(__name__)

# Temporary files of a build with several processes (removed when the structure is written).
TRAINED_FILE = "faiss.trained.tmp"
PART_FILE = "faiss.part-{:05d}.tmp"


class StoredFeatures:
    """Row blocks on disk read as one ``N x D`` database: ``blocks[j]`` holds rows ``offsets[j]..``."""

    def __init__(self, blocks: Sequence[np.ndarray]) -> None:
        self.blocks = list(blocks)
        sizes = [int(b.shape[0]) for b in self.blocks]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @classmethod
    def of_index(cls, root: str, num_shards: int, dba: bool) -> "StoredFeatures":
        """The prepared database of the index in ``root``: ``dba.npy`` with DBA, else its shards (memory-mapped)."""
        if dba:
            return cls([np.load(os.path.join(root, store.DBA_FILE), mmap_mode="r")])
        return cls([store.open_shard(root, i) for i in range(num_shards)])

    @property
    def count(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.blocks[0].shape[1])

    def rows(self, items: np.ndarray) -> torch.Tensor:
        """Float32 rows ``items`` (any order, repeats allowed), reading only those rows."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        out = np.empty((len(items), self.dim), np.float32)
        block = np.searchsorted(self.offsets, items, side="right") - 1
        for j in np.unique(block):
            where = np.nonzero(block == j)[0]
            out[where] = self.blocks[j][items[where] - self.offsets[j]]
        return torch.from_numpy(out)

    def chunks(self, part: Tuple[int, int] = (0, 1)) -> Iterator[Tuple[int, torch.Tensor]]:
        """(first row, float32 rows) of each block of ``part`` = (rank, world): a contiguous share of the blocks."""
        rank, world = part
        n = len(self.blocks)
        for j in range(n * rank // world, n * (rank + 1) // world):
            yield int(self.offsets[j]), torch.from_numpy(np.array(self.blocks[j], dtype=np.float32))


def exact_search(query: torch.Tensor, stored: StoredFeatures, k: int,
                 backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top ``k`` of normalised ``query`` over ``stored``, one block in memory at a time.

    Each block's top ``k`` (:func:`knn`, the evaluator's search) is merged with :func:`merge_topk`: the
    answer of one search over all rows, ties by ascending row.
    """
    k = min(k, stored.count)
    parts = []
    for first, block in stored.chunks():
        scores, idx = knn(query, normalize(block), min(k, len(block)), "cosine", backend)
        parts.append((scores, idx + first))
    return merge_topk(parts, k)


def expand_queries(query: torch.Tensor, stored: StoredFeatures, qe_k: int, alpha: float, qe_times: int = 1,
                   backend: str = "auto") -> torch.Tensor:
    """Alpha query expansion of the queries alone (``TEST.AQE.MODE: query``) reading only the neighbours' rows.

    The same neighbours (exact), weights and formula as
    :func:`fastreid.evaluation.query_expansion.aqe_queries_only` over the whole database.
    """
    query = query.float()
    num_query = query.shape[0]
    for _ in range(qe_times):
        q_normed = normalize(query)
        sims = (q_normed * q_normed).sum(1, keepdim=True)
        idx = torch.arange(num_query)[:, None]
        pool = query
        if qe_k > 1:
            nbr_sims, nbr_idx = exact_search(q_normed, stored, qe_k - 1, backend)
            wanted, position = np.unique(nbr_idx.numpy(), return_inverse=True)
            pool = torch.cat([query, stored.rows(wanted)])
            sims = torch.cat([sims, nbr_sims], 1)
            idx = torch.cat([idx, torch.from_numpy(position.reshape(nbr_idx.shape)) + num_query], 1)
        query = weighted_neighbour_mean(pool, idx, sims, alpha)
    return query


def _write(index: "faiss.Index", path: str) -> None:
    faiss.write_index(index, path + ".writing")
    os.replace(path + ".writing", path)


def build_structure(root: str, stored: StoredFeatures, index_type: str, nlist: int, nprobe: int, pq_m: int,
                    train_size: int = 0, seed: int = 0) -> Optional[FaissIndex]:
    """Write ``root/faiss.index`` over the normalised ``stored`` features; every process calls it.

    Rank 0 trains; each process adds its contiguous share of the blocks (rows keep their numbers) and,
    except rank 0, writes it to a part file in ``root`` (which all processes must see); rank 0 appends the
    parts in rank order and writes the structure. Peak memory of a process: the training sample (rank 0),
    one block in float32 and its structure (compressed codes for IVF-PQ). Returns the structure on rank 0.
    """
    rank, world = comm.get_rank(), comm.get_world_size()
    ann = FaissIndex.empty(stored.count, stored.dim, "cosine", index_type, nlist, nprobe, use_gpu=False, pq_m=pq_m)
    trained = os.path.join(root, TRAINED_FILE)
    if rank == 0:
        for name in os.listdir(root):  # parts of an interrupted build (maybe with more processes) go first
            if name == TRAINED_FILE or (name.startswith(PART_FILE.split("{")[0]) and name.endswith(".tmp")):
                os.remove(os.path.join(root, name))
        rows = ann.training_rows(train_size, seed)
        ann.train(normalize(stored.rows(np.arange(stored.count) if rows is None else rows)))
        if world > 1:
            _write(ann.index, trained)
    comm.synchronize()
    if rank > 0:
        ann = FaissIndex.read(trained, mmap=False)
    for first, block in stored.chunks((rank, world)):
        ann.add(normalize(block), first)
    if rank > 0:
        _write(ann.index, os.path.join(root, PART_FILE.format(rank)))
    comm.synchronize()
    if rank > 0:
        return None
    for other in range(1, world):
        part = os.path.join(root, PART_FILE.format(other))
        ann.merge(faiss.read_index(part, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY))
        os.remove(part)
    _write(ann.index, os.path.join(root, store.FAISS_FILE))
    if world > 1:
        os.remove(trained)
    logger.info("faiss %s over %d features written (%d part(s) merged)", ann.factory, ann.size, world)
    return ann

