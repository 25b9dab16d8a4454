"""Exact retrieval metrics without a query x gallery distance matrix or its argsort.

Only the positives of a query need a rank: the rank of a positive is one plus the number of gallery
items that score higher, plus the number with an equal score and a lower index (a stable sort by
index breaks ties). Those counts come from one ``searchsorted`` of every score of a query chunk into
the chunk's sorted positive scores, so memory is bounded by the chunk, never by ``Q x G``.

From the sorted ranks ``r_1 < ... < r_P`` of a query's ``P`` positives:

- AP = mean_j j / r_j (mean of precision at each relevant item, over the full ranking);
- AP@10 = sum over r_j <= 10 of j / r_j, divided by min(10, P) (DIRA challenge definition);
- CMC hit at k when r_1 <= k; INP = P / r_P.

Queries without any positive are counted, reported and excluded from the means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .search import DEFAULT_CHUNK_BYTES, default_device, pairwise_scores, rows_per_chunk, topk_stable


@dataclass
class PerQueryMetrics:
    """Per-query results; entries of queries without positives are NaN (``num_pos`` = 0)."""

    ap: np.ndarray
    ap_at_10: np.ndarray
    inp: np.ndarray
    first_rank: np.ndarray
    num_pos: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.num_pos > 0


def positive_ranks(scores: torch.Tensor, pos_idx: torch.Tensor) -> torch.Tensor:
    """1-based rank of each positive in its row's stable descending order.

    Args:
        scores: ``c x G`` similarity scores; items excluded from the ranking must be ``-inf``.
        pos_idx: ``c x P`` gallery indices of positives, padded with ``-1``.
    Returns:
        ``c x P`` int64 ranks; padding entries hold 0.
    """
    valid = pos_idx >= 0
    above = items_above(scores, scores.gather(1, pos_idx.clamp(min=0)), pos_idx)
    return torch.where(valid, 1 + above, torch.zeros_like(above))


def items_above(scores: torch.Tensor, pos_scores: torch.Tensor, pos_idx: torch.Tensor,
                columns: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How many of the items in ``scores`` rank above each positive: a higher score, or an equal score and
    a lower index (the stable order). Summed over disjoint parts of a gallery, plus one, it is the rank.

    Args:
        scores: ``c x G`` scores of some items; excluded items are ``-inf``.
        pos_scores: ``c x P`` the positives' scores (wherever they are); ignored at padding.
        pos_idx: ``c x P`` the positives' indices in the whole gallery, ``-1`` padding.
        columns: the gallery index of each column of ``scores`` (default ``0..G-1``).
    Returns:
        ``c x P`` int64 counts, 0 at padding; a positive among the columns does not count itself.
    """
    c, g = scores.shape
    p = pos_idx.shape[1]
    if p == 0:
        return torch.zeros(c, 0, dtype=torch.int64, device=scores.device)
    scores = scores.contiguous()
    cols = torch.arange(g, device=scores.device) if columns is None else columns.to(scores.device)
    valid = pos_idx >= 0
    pos_scores = torch.where(valid, pos_scores, torch.full_like(pos_scores, float("inf")))
    sorted_scores, perm = torch.sort(pos_scores, dim=1)
    sorted_scores = sorted_scores.contiguous()
    # n_less[r, x] = number of positives scoring strictly below item x.
    n_less = torch.searchsorted(sorted_scores, scores)
    ones = torch.ones(1, 1, dtype=torch.int64, device=scores.device).expand_as(n_less)
    hist = torch.zeros(c, p + 1, dtype=torch.int64, device=scores.device).scatter_add_(1, n_less, ones)
    # Items above sorted positive j are those with n_less > j: a suffix sum of the histogram.
    above_sorted = hist.flip(1).cumsum(1).flip(1)[:, 1:]
    above = torch.zeros_like(above_sorted).scatter_(1, perm, above_sorted)
    # Each positive among the columns equals its own score; more equalities mean a tie to resolve by index.
    num_equal = torch.searchsorted(sorted_scores, scores, right=True).sum(1) - n_less.sum(1)
    own = (valid & torch.isin(pos_idx, cols)).sum(1)
    for r in torch.nonzero(num_equal > own).flatten().tolist():
        # Rare exact ties: count the equal-score items of lower index, one row (P x G) at a time.
        equal = (scores[r][None, :] == pos_scores[r][:, None]) & (cols[None, :] < pos_idx[r][:, None])
        above[r] += equal.sum(1)
    return torch.where(valid, above, torch.zeros_like(above))


def metrics_from_ranks(ranks: torch.Tensor, num_pos: torch.Tensor) -> Tuple[np.ndarray, ...]:
    """AP, AP@10, INP and first-hit rank per row from positive ranks (0 = padding)."""
    big = torch.iinfo(torch.int64).max
    r = torch.where(ranks > 0, ranks, torch.full_like(ranks, big))
    r = torch.sort(r, dim=1).values
    j = torch.arange(1, r.shape[1] + 1, dtype=torch.float64)[None, :]
    valid = r != big
    rf = torch.where(valid, r, torch.ones_like(r)).double()
    prec = torch.where(valid, j / rf, torch.zeros_like(rf))
    n = num_pos.double()
    safe_n = n.clamp(min=1)
    ap = prec.sum(1) / safe_n
    ap10 = torch.where(valid & (r <= 10), prec, torch.zeros_like(prec)).sum(1) / n.clamp(max=10).clamp(min=1)
    last = torch.where(valid, r, torch.zeros_like(r)).max(1).values.double() if r.shape[1] else torch.ones(len(n))
    inp = n / last.clamp(min=1)
    first = r[:, 0] if r.shape[1] else torch.full((len(n),), big)
    nan = torch.full_like(ap, float("nan"))
    has = num_pos > 0
    first = torch.where(has, first, torch.zeros_like(first))
    return (torch.where(has, ap, nan).numpy(), torch.where(has, ap10, nan).numpy(),
            torch.where(has, inp, nan).numpy(), first.numpy())


def _group_positions(q_pids: np.ndarray, g_pids: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery indices sorted by id, and each query's [start, end) slice of them."""
    order = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[order]
    starts = np.searchsorted(sorted_pids, q_pids, side="left")
    ends = np.searchsorted(sorted_pids, q_pids, side="right")
    return order, starts, ends


def rank_positives_chunked(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                           q_camids: Optional[Sequence] = None, g_camids: Optional[Sequence] = None,
                           metric: str = "cosine", topk: int = 0, chunk_bytes: int = 2 * DEFAULT_CHUNK_BYTES,
                           device: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Positive ranks of every query (and optionally its top-k list), one query chunk at a time.

    The chunks are scored on ``device`` (default: CUDA when available, else CPU).
    For ``metric="cosine"`` the features must already be L2-normalised. When camera ids are given,
    gallery items with the query's id *and* camera are dropped from the ranking (person re-id
    protocol); they are then neither positives nor competitors.

    Returns:
        dict with ``ranks`` (``Q x Pmax`` int64, 0 = padding), ``num_pos`` (``Q``) and, when
        ``topk > 0``, ``topk_idx``/``topk_scores`` (``Q x topk``, over the filtered ranking).
    """
    if len(q_pids) != query.shape[0] or len(g_pids) != gallery.shape[0]:
        raise ValueError(f"{len(q_pids)} query ids for {query.shape[0]} features or "
                         f"{len(g_pids)} gallery ids for {gallery.shape[0]} features")
    dev = torch.device(device or default_device())
    gal = gallery.to(dev, torch.float32)
    return rank_positives(lambda s, e: pairwise_scores(query[s:e].to(dev), gal, metric), query.shape[0],
                          q_pids, g_pids, q_camids, g_camids, topk,
                          rows_per_chunk(gallery.shape[0], 24, chunk_bytes))


class PositiveLists:
    """Each query's positives (gallery items of its id) and, with camera ids, its junk (items of its id and
    camera, which leave the ranking), chunk by chunk, from the ids alone."""

    def __init__(self, q_pids: Sequence, g_pids: Sequence, q_camids: Optional[Sequence] = None,
                 g_camids: Optional[Sequence] = None) -> None:
        self.g_pids = np.asarray(g_pids)
        self.filt = q_camids is not None and g_camids is not None
        self.qc = np.asarray(q_camids) if self.filt else None
        self.gc = np.asarray(g_camids) if self.filt else None
        self.order, self.starts, ends = _group_positions(np.asarray(q_pids), self.g_pids)
        self.num_same = ends - self.starts
        self.pmax = int(self.num_same.max()) if len(self.num_same) else 0

    def chunk(self, s: int, e: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(positives, junk) of queries ``s..e-1``: ``c x pmax`` gallery indices padded with ``-1`` (junk is None
        without camera ids)."""
        offs = np.arange(self.pmax)
        slot = self.starts[s:e, None] + offs[None, :]
        last = max(len(self.g_pids) - 1, 0)
        same = np.where(offs[None, :] < self.num_same[s:e, None], self.order[np.minimum(slot, last)], -1)
        if not self.filt:
            return same, None
        is_junk = (same >= 0) & (self.gc[np.maximum(same, 0)] == self.qc[s:e, None])
        return np.where(is_junk, -1, same), np.where(is_junk, same, -1)


def rank_positives(score_rows: Callable[[int, int], torch.Tensor], num_query: int, q_pids: Sequence,
                   g_pids: Sequence, q_camids: Optional[Sequence] = None, g_camids: Optional[Sequence] = None,
                   topk: int = 0, step: int = 1024) -> Dict[str, np.ndarray]:
    """Core of :func:`rank_positives_chunked`: ``score_rows(s, e)`` gives the scores of queries s..e-1."""
    lists = PositiveLists(q_pids, g_pids, q_camids, g_camids)
    nq, ng = num_query, len(lists.g_pids)
    out_ranks = np.zeros((nq, lists.pmax), dtype=np.int64)
    out_num = np.zeros(nq, dtype=np.int64)
    k = min(topk, ng)
    top_i = np.zeros((nq, k), dtype=np.int64)
    top_s = np.zeros((nq, k), dtype=np.float32)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        scores = score_rows(s, e).float()
        pos, junk = lists.chunk(s, e)
        if junk is not None:
            rows, cols = np.nonzero(junk >= 0)
            scores = scores.clone()  # score_rows may return a view of the caller's matrix
            scores[torch.from_numpy(rows).to(scores.device),
                   torch.from_numpy(junk[rows, cols]).to(scores.device)] = float("-inf")
        out_ranks[s:e] = positive_ranks(scores, torch.from_numpy(pos).to(scores.device)).cpu().numpy()
        out_num[s:e] = (pos >= 0).sum(1)
        if k:
            vals, idx = topk_stable(scores, k)
            top_i[s:e], top_s[s:e] = idx.cpu().numpy(), vals.cpu().numpy()
    result = {"ranks": out_ranks, "num_pos": out_num}
    if k:
        result.update(topk_idx=top_i, topk_scores=top_s)
    return result


def per_query_metrics(ranks: np.ndarray, num_pos: np.ndarray) -> PerQueryMetrics:
    """Wrap :func:`metrics_from_ranks` for numpy inputs."""
    ap, ap10, inp, first = metrics_from_ranks(torch.from_numpy(np.asarray(ranks, dtype=np.int64)),
                                              torch.from_numpy(np.asarray(num_pos, dtype=np.int64)))
    return PerQueryMetrics(ap=ap, ap_at_10=ap10, inp=inp, first_rank=first, num_pos=np.asarray(num_pos))


def summarize(per_query: PerQueryMetrics, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Means over queries with at least one positive, in percent; also counts skipped queries."""
    v = per_query.valid
    if not v.any():
        raise ValueError("No query has a positive in the gallery: metrics are undefined")
    out = {"mAP": 100 * float(per_query.ap[v].mean()), "mAP@10": 100 * float(per_query.ap_at_10[v].mean())}
    for k in ks:
        out[f"Rank-{k}"] = 100 * float((per_query.first_rank[v] <= k).mean())
    out["mINP"] = 100 * float(per_query.inp[v].mean())
    out["num_valid_queries"] = int(v.sum())
    out["num_queries_without_positive"] = int((~v).sum())
    return out


def cmc_curve(first_rank: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC[k-1] = fraction of the given queries whose first positive is within the top k."""
    ks = np.arange(1, max_rank + 1)
    return (np.asarray(first_rank)[:, None] <= ks[None, :]).mean(0).astype(np.float32)
