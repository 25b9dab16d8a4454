"""Retrieval over a gallery split across processes, without gathering its features anywhere.

Under several processes every rank extracts a contiguous part of the test set. With
``TEST.SHARD_GALLERY`` (the default) each rank keeps its part of the gallery: the queries, which are
few, are gathered to every rank, and each step of the pipeline is distributed so that a rank holds its
own part plus at most one visiting part at a time:

- **search**: every rank searches its part for all queries (``TEST.SEARCH``'s structure over that part)
  and rank 0 merges the per-part top-k lists (:func:`fastreid.evaluation.search.merge_topk`); with exact
  search the merged list is the single-process one.
- **metrics**: a positive's rank is one plus the items above it in every part
  (:func:`fastreid.evaluation.metrics.items_above`): the positives' scores are summed across ranks (one
  rank owns each), then the per-part counts; mAP, CMC and mINP are those of one process.
- **DBA and query expansion** (both modes): a row's neighbours come from an exact k-NN in which the parts
  visit every rank in turn by broadcast (``visit``), merged part by part; the neighbours' weighted
  features are added up while the parts visit a second time (one process's weighted means, summed in
  another order).

Re-ranking and ``TEST.AQE.AUTO``'s choosing need every feature in one place: the evaluator gathers
them for those (docs/scaling.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils import comm
from ..utils.compute_dist import pairwise_scores
from .metrics import PositiveLists, items_above
from .pipeline import RetrievalOptions, rank
from .search import (DEFAULT_CHUNK_BYTES, default_device, merge_topk, normalize, rows_per_chunk, topk_stable,
                     torch_knn)

# Neighbour rows weighted and added at a time (bounds the temporary copy).
_ADD_ROWS = 65536


@dataclass
class GalleryShards:
    """How the gallery is split: ``sizes[r]`` rows on rank ``r``, in gallery order; ``peak_rows`` is the
    most gallery rows this process has held at once (its own part plus a visiting one)."""

    sizes: Tuple[int, ...]
    rank: int
    dim: int
    peak_rows: int = field(default=0)

    @classmethod
    def of(cls, local_rows: int, dim: int) -> "GalleryShards":
        """The split of the current process group, from every rank's number of local gallery rows."""
        shards = cls(tuple(int(n) for n in comm.all_gather(int(local_rows))), comm.get_rank(), dim)
        shards.peak_rows = shards.local
        return shards

    @property
    def offsets(self) -> List[int]:
        return [int(x) for x in np.concatenate([[0], np.cumsum(self.sizes)[:-1]])]

    @property
    def offset(self) -> int:
        """Gallery index of this rank's first row."""
        return self.offsets[self.rank]

    @property
    def local(self) -> int:
        return self.sizes[self.rank]

    @property
    def total(self) -> int:
        return int(sum(self.sizes))


def visit(local: torch.Tensor, shards: GalleryShards) -> Iterator[Tuple[int, torch.Tensor]]:
    """Every rank's part in rank order as ``(gallery offset, rows)``: the own part in place, the others by
    broadcast one at a time (every rank must iterate to the end, together)."""
    for src, (offset, size) in enumerate(zip(shards.offsets, shards.sizes)):
        if size == 0:
            continue
        if src == shards.rank:
            part = local.float().contiguous()
        else:
            part = torch.empty(size, shards.dim, dtype=torch.float32)
            shards.peak_rows = max(shards.peak_rows, shards.local + size)
        yield offset, comm.broadcast(part, src)


def knn(rows: torch.Tensor, local: torch.Tensor, shards: GalleryShards, k: int,
        fixed: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top-``k`` of normalised ``rows`` among ``[fixed; gallery]``.

    ``fixed`` (rows every rank holds, e.g. the queries) take indices ``0..F-1``, gallery item ``g`` takes
    ``F + g``; ties go to the lower index, as in one process.
    """
    num_fixed = 0 if fixed is None else fixed.shape[0]
    best = (torch.empty(rows.shape[0], 0), torch.empty(rows.shape[0], 0, dtype=torch.int64))
    if num_fixed:
        best = torch_knn(rows, fixed, k, "cosine")
    for offset, part in visit(local, shards):
        scores, idx = torch_knn(rows, part, k, "cosine")
        best = merge_topk([best, (scores, idx + num_fixed + offset)], k)
    return best


def weighted_means(idx: torch.Tensor, sims: torch.Tensor, alpha: float, local: torch.Tensor,
                   shards: GalleryShards, fixed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Row ``i``: ``mean_t pool[idx[i, t]] * sims[i, t] ** alpha`` over ``pool = [fixed; gallery]`` (indices as
    :func:`knn` gives them), the weighted gallery rows added up while their parts visit (one pass, no
    ``rows x k x dim`` gather; the sum runs in visiting order, so it can differ from one process's in the
    last bit)."""
    num_fixed = 0 if fixed is None else fixed.shape[0]
    weights = sims.float().pow(alpha)
    out = torch.zeros(idx.shape[0], shards.dim, dtype=torch.float32)

    def add(pool: torch.Tensor, lo: int) -> None:
        inside = (idx >= lo) & (idx < lo + pool.shape[0])
        for t in range(idx.shape[1]):
            rows = torch.nonzero(inside[:, t]).flatten()
            for s in range(0, len(rows), _ADD_ROWS):
                r = rows[s:s + _ADD_ROWS]
                out.index_add_(0, r, pool[idx[r, t] - lo] * weights[r, t, None])

    if num_fixed:
        add(fixed.float(), 0)
    for offset, part in visit(local, shards):
        add(part, num_fixed + offset)
    return out / max(1, idx.shape[1])


def post_process(query: torch.Tensor, local: torch.Tensor, shards: GalleryShards,
                 options: RetrievalOptions) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`fastreid.evaluation.pipeline.post_process` (DBA -> expansion -> normalisation) of all queries
    and this rank's gallery part; ``options.rerank`` is not distributed (the caller gathers)."""
    if options.rerank:
        raise ValueError("k-reciprocal re-ranking needs every feature in one process; it is not distributed")
    query, local = query.float(), local.float()
    if options.dba:
        normed = normalize(local)
        sims, idx = knn(normed, normed, shards, options.dba_k)
        local = weighted_means(idx, sims, options.dba_alpha, local, shards)
    for _ in range(options.qe_times if options.expands else 0):
        if options.qe_mode == "all":
            rows = normalize(torch.cat([query, local]))
            sims, idx = knn(rows, rows[query.shape[0]:], shards, options.qe_k, fixed=rows[:query.shape[0]])
            both = weighted_means(idx, sims, options.qe_alpha, local, shards, fixed=query)
            query, local = both[:query.shape[0]], both[query.shape[0]:]
        else:
            q_normed = normalize(query)
            sims = (q_normed * q_normed).sum(1, keepdim=True)
            idx = torch.arange(query.shape[0])[:, None]
            if options.qe_k > 1:
                g_sims, g_idx = knn(q_normed, normalize(local), shards, options.qe_k - 1)
                sims, idx = torch.cat([sims, g_sims], 1), torch.cat([idx, g_idx + query.shape[0]], 1)
            query = weighted_means(idx, sims, options.qe_alpha, local, shards, fixed=query)
    if options.metric == "cosine":
        query, local = normalize(query), normalize(local)
    return query, local


def merged_top(query: torch.Tensor, local: torch.Tensor, shards: GalleryShards, k: int,
               options: RetrievalOptions) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The top ``k`` gallery items of every query, best first, on rank 0 (None elsewhere): each rank searches its
    part as ``options`` say (exact, or a faiss structure over the part) and rank 0 merges the lists."""
    scores, idx = np.empty((len(query), 0), np.float32), np.empty((len(query), 0), np.int64)
    if shards.local:
        scores, idx = rank(query, local, k, options)
        idx = np.where(idx >= 0, idx + shards.offset, -1)
    parts = comm.gather((torch.from_numpy(np.asarray(scores, np.float32)), torch.from_numpy(idx.astype(np.int64))))
    if not comm.is_main_process():
        return None
    scores, idx = merge_topk(parts, min(k, shards.total))
    return scores.numpy(), idx.numpy()


def positive_ranks(query: torch.Tensor, local: torch.Tensor, shards: GalleryShards, q_pids: np.ndarray,
                   g_pids: np.ndarray, q_cam: Optional[np.ndarray] = None, g_cam: Optional[np.ndarray] = None,
                   metric: str = "cosine", topk: int = 0,
                   chunk_bytes: int = 2 * DEFAULT_CHUNK_BYTES) -> Dict[str, np.ndarray]:
    """:func:`fastreid.evaluation.metrics.rank_positives_chunked` over a split gallery, on every rank.

    ``g_pids`` / ``g_cam`` are the whole gallery's (small); features stay in their parts. With camera ids,
    items of the query's id and camera leave the ranking, as in one process. ``topk`` > 0 adds the merged
    ``topk_idx`` / ``topk_scores``.
    """
    lists = PositiveLists(q_pids, g_pids, q_cam, g_cam)
    nq, ng, pmax = len(q_pids), len(g_pids), lists.pmax
    lo, hi = shards.offset, shards.offset + shards.local
    dev = torch.device(default_device())  # scores on the GPU when there is one; exchanges on the CPU
    columns, gallery = torch.arange(lo, hi, device=dev), local.to(dev, torch.float32)
    step = rows_per_chunk(max(max(shards.sizes), 1), 24, chunk_bytes)  # the same chunks on every rank
    ranks = np.zeros((nq, pmax), np.int64)
    num_pos = np.zeros(nq, np.int64)
    k = min(topk, ng)
    top_s, top_i = np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        scores = pairwise_scores(query[s:e].to(dev), gallery, metric)
        pos, junk = lists.chunk(s, e)
        if junk is not None:  # this part's junk leaves the ranking
            rows, cols = np.nonzero((junk >= lo) & (junk < hi))
            scores[torch.from_numpy(rows).to(dev), torch.from_numpy(junk[rows, cols] - lo).to(dev)] = float("-inf")
        mine = (pos >= lo) & (pos < hi)
        rows, cols = np.nonzero(mine)
        pos_scores = torch.zeros(e - s, pmax)
        pos_scores[torch.from_numpy(rows), torch.from_numpy(cols)] = scores[
            torch.from_numpy(rows).to(dev), torch.from_numpy(pos[mine] - lo).to(dev)].cpu()
        pos_t = torch.from_numpy(pos)
        num_pos[s:e] = (pos >= 0).sum(1)
        above = items_above(scores, comm.all_reduce_sum(pos_scores).to(dev), pos_t.to(dev), columns).cpu()
        ranks[s:e] = torch.where(pos_t >= 0, 1 + comm.all_reduce_sum(above), torch.zeros_like(above)).numpy()
        if k:
            vals, idx = topk_stable(scores, k)
            merged = merge_topk([(v, i + o) for v, i, o in comm.all_gather((vals.cpu(), idx.cpu(), lo))], k)
            top_s[s:e], top_i[s:e] = merged[0].numpy(), merged[1].numpy()
    result = {"ranks": ranks, "num_pos": num_pos}
    if k:
        result.update(topk_idx=top_i, topk_scores=top_s)
    return result


def split_rows(local_count: int, num_query: int) -> Tuple[int, List[int]]:
    """How many of this rank's leading rows are queries (the test set is queries first, split contiguously
    over ranks in rank order), and every rank's row count."""
    counts = [int(n) for n in comm.all_gather(int(local_count))]
    start = sum(counts[:comm.get_rank()])
    return max(0, min(local_count, num_query - start)), counts


def gather_rows(values: Sequence, dtype=None) -> np.ndarray:
    """Every rank's ``values`` (a small per-item array: ids, cameras) concatenated in rank order."""
    return np.concatenate([np.asarray(v, dtype=dtype) for v in comm.all_gather(np.asarray(values, dtype=dtype))])
