"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) from sparse neighbour lists.

The textbook algorithm builds dense ``N x N`` matrices over ``N = Q + G`` items. Every quantity it
uses is, however, local:

- the k-reciprocal sets need only each item's ``k1 + 1`` nearest items;
- the row-normalised distance ``d(i, j) / max_l d(i, l)`` needs only each row's maximum, a chunked
  reduction;
- the encoding ``V`` has a few dozen non-zeros per row (a sparse matrix), and the local expansion
  ``V <- mean of V over the k2 nearest rows`` is a sparse product;
- the Jaccard distance of ``i`` and ``j`` sums ``min(V_il, V_jl)`` over the common non-zeros.

Approximation (the only one): the final distance
``(1 - lambda) * jaccard + lambda * d_norm`` is evaluated for each query's ``K`` candidates, the top
``K`` of the original ranking, and only those are re-ordered; items beyond rank ``K`` keep their
original ranks. The textbook result is recovered exactly (up to float rounding) when ``K`` covers
the whole gallery; otherwise a gallery item outside a query's top ``K`` that shares k-reciprocal
neighbours with it is not promoted. Neighbour lists here are exact (torch, stable ties).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import scipy.sparse as sp
import torch

from .search import DEFAULT_CHUNK_BYTES, check_metric, pairwise_scores, rows_per_chunk, topk_stable

_EXPAND_ROWS = 256


def _distance(scores: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance of the textbook: squared euclidean (``2 - 2 cos`` for normalised features)."""
    return 2 - 2 * scores if metric == "cosine" else -scores


def neighbours_and_row_max(feats: torch.Tensor, k: int, metric: str,
                           chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows (stable order) and its largest distance to any row, chunked."""
    n = feats.shape[0]
    nbr = np.empty((n, min(k, n)), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    step = rows_per_chunk(n, 16, chunk_bytes)
    for s in range(0, n, step):
        scores = pairwise_scores(feats[s:s + step], feats, metric)
        nbr[s:s + step] = topk_stable(scores, k)[1].numpy()
        row_max[s:s + step] = _distance(scores.min(1).values, metric).numpy()
    return nbr, row_max


def _reciprocal_mask(lists: np.ndarray) -> np.ndarray:
    """mask[i, t]: item i is also among the listed neighbours of ``lists[i, t]``."""
    rows = np.arange(lists.shape[0])[:, None, None]
    return (lists[lists] == rows).any(-1)


def _expanded_pairs(nbr: np.ndarray, k1: int) -> Tuple[np.ndarray, np.ndarray]:
    """(row, col) pairs of every item's k-reciprocal set expanded with the half-size sets."""
    forward = nbr[:, :k1 + 1]
    half = nbr[:, :int(np.around(k1 / 2)) + 1]
    m_full = _reciprocal_mask(forward)
    m_half = _reciprocal_mask(half)
    keys = []
    n = nbr.shape[0]
    for s in range(0, n, _EXPAND_ROWS):
        fi, mi = forward[s:s + _EXPAND_ROWS], m_full[s:s + _EXPAND_ROWS]
        cand, cand_m = half[fi], m_half[fi]
        in_r = ((cand[..., None] == fi[:, None, None, :]) & mi[:, None, None, :]).any(-1)
        inter = (in_r & cand_m).sum(-1)
        accept = mi & (inter > 2.0 / 3.0 * cand_m.sum(-1))
        rows = np.arange(s, s + fi.shape[0])
        r1 = np.broadcast_to(rows[:, None], fi.shape)[mi]
        keys.append(r1 * n + fi[mi])
        take = accept[..., None] & cand_m
        r2 = np.broadcast_to(rows[:, None, None], cand.shape)[take]
        keys.append(r2 * n + cand[take])
    key = np.unique(np.concatenate(keys))
    return key // n, key % n


def _pair_distance(feats: torch.Tensor, rows: np.ndarray, cols: np.ndarray, metric: str) -> np.ndarray:
    """Textbook distance of individual (row, col) pairs, computed from the features."""
    out = np.empty(len(rows), dtype=np.float32)
    step = 1 << 16
    for s in range(0, len(rows), step):
        a = feats[torch.from_numpy(rows[s:s + step])]
        b = feats[torch.from_numpy(cols[s:s + step])]
        if metric == "cosine":
            d = 2 - 2 * (a * b).sum(1)
        else:
            d = (a * a).sum(1) + (b * b).sum(1) - 2 * (a * b).sum(1)
        out[s:s + step] = d.numpy()
    return out


def _csr_row_entries(mat: sp.csr_matrix, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated (owner position, column, value) of the listed CSR rows."""
    starts = mat.indptr[rows]
    lens = mat.indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), lens)
    offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    flat = starts[owner] + offsets
    return owner, mat.indices[flat], mat.data[flat]


def k_reciprocal_encoding(feats: torch.Tensor, k1: int = 20, k2: int = 6,
                          metric: str = "cosine") -> Tuple[sp.csr_matrix, np.ndarray]:
    """The textbook's encoding ``V`` of every item by its expanded k-reciprocal set.

    Args:
        feats: ``N x D`` features (L2-normalised for ``metric="cosine"``).
        k1, k2: size of the k-reciprocal sets and of the local expansion (``k2 = 1``: none).
    Returns:
        (``V`` as an ``N x N`` CSR matrix with sorted indices, each row summing to 1, and each row's
        largest distance, which normalises the distances of that row).
    """
    n = feats.shape[0]
    nbr, row_max = neighbours_and_row_max(feats, max(k1 + 1, k2), metric)
    rows, cols = _expanded_pairs(nbr, k1)
    # A row whose items all coincide has largest distance 0 (identical drawings): its distances stay 0.
    dist = _pair_distance(feats, rows, cols, metric) / np.where(row_max > 0, row_max, 1.0)[rows]
    weight = np.exp(-dist.astype(np.float64))
    weight /= np.bincount(rows, weights=weight, minlength=n)[rows]
    v = sp.csr_matrix((weight, (rows, cols)), shape=(n, n))
    if k2 != 1:
        qe_rows = np.repeat(np.arange(n), k2)
        avg = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (qe_rows, nbr[:, :k2].ravel())), shape=(n, n))
        v = (avg @ v).tocsr()
    v.sort_indices()
    return v, row_max


def k_reciprocal_rerank(query: torch.Tensor, gallery: torch.Tensor, candidates: np.ndarray, k1: int = 20,
                        k2: int = 6, lambda_value: float = 0.3,
                        metric: str = "cosine") -> Tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's candidate gallery items by the k-reciprocal final distance.

    Args:
        query, gallery: features (L2-normalised for ``metric="cosine"``).
        candidates: ``Q x K`` gallery indices to re-order (usually the original top K).
        k1, k2, lambda_value: ``TEST.RERANK.K1``, ``K2``, ``LAMBDA``.
    Returns:
        (final distances ``Q x K`` ascending, gallery indices ``Q x K`` in the new order; ties keep
        the lower index first).
    """
    check_metric(metric)
    feats = torch.cat([query.float(), gallery.float()])
    nq, n = query.shape[0], feats.shape[0]
    v, row_max = k_reciprocal_encoding(feats, k1, k2, metric)
    candidates = np.asarray(candidates, dtype=np.int64)
    k = candidates.shape[1]
    out_d = np.empty(candidates.shape, dtype=np.float32)
    out_i = np.empty(candidates.shape, dtype=np.int64)
    step = max(1, rows_per_chunk(n, 8) // 4)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        dense = v[s:e].toarray()
        cand = candidates[s:e]
        owner, c_cols, c_vals = _csr_row_entries(v, (cand + nq).ravel())
        qrow = owner // k
        common = np.minimum(dense[qrow, c_cols], c_vals)
        tmin = np.bincount(owner, weights=common, minlength=cand.size).reshape(cand.shape)
        jaccard = 1 - tmin / (2 - tmin)
        orig = _pair_distance(feats, np.repeat(np.arange(s, e), k), cand.ravel() + nq, metric)
        orig = orig.reshape(cand.shape) / row_max[s:e, None]
        final = (jaccard * (1 - lambda_value) + orig * lambda_value).astype(np.float32)
        by_index = np.argsort(cand, axis=1, kind="stable")
        cand_sorted = np.take_along_axis(cand, by_index, 1)
        final_sorted = np.take_along_axis(final, by_index, 1)
        order = np.argsort(final_sorted, axis=1, kind="stable")
        out_d[s:e] = np.take_along_axis(final_sorted, order, 1)
        out_i[s:e] = np.take_along_axis(cand_sorted, order, 1)
    return out_d, out_i
