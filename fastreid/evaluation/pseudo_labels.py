"""Pseudo-labels for unlabeled drawings: k-reciprocal Jaccard distances, then DBSCAN.

The clustering step of unsupervised re-identification (SpCL, cluster contrast): drawings whose
k-reciprocal neighbourhoods overlap strongly are taken for views of one object. Two drawings that
share no k-reciprocal neighbour are at Jaccard distance 1, so the distances are kept sparse: only pairs
that share one are stored, and DBSCAN with a radius below 1 needs no other pair.

DBSCAN as in Ester et al. (1996), on the ``<= eps`` neighbourhoods (the item itself included): a core
item has at least ``min_samples`` of them; clusters are the connected groups of core items; an item that
is not core but lies within ``eps`` of a core item joins the cluster of its nearest one (ties: lowest
index), which makes the result independent of the visiting order; everything else is an outlier (-1).
Clusters are numbered 0, 1, ... in the order of their lowest item index.
"""
from __future__ import annotations

from typing import List, Union

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from fastreid.config import CfgNode

from .rerank import k_reciprocal_encoding
from .search import check_metric, normalize

__all__ = ["jaccard_distances", "dbscan", "pseudo_labels", "validate"]

# Column entries expanded into pairs at a time (bounds the memory of jaccard_distances).
_PAIR_CHUNK = 1 << 22


def jaccard_distances(features: torch.Tensor, k1: int = 20, k2: int = 6, metric: str = "cosine") -> sp.csr_matrix:
    """Sparse k-reciprocal Jaccard distances among ``N`` items (Zhong et al., CVPR 2017).

    Args:
        features: ``N x D`` (L2-normalised for ``metric="cosine"``).
        k1, k2: as ``TEST.RERANK.K1`` / ``K2``.
    Returns:
        ``N x N`` symmetric CSR matrix holding the distance (0..1) of every pair that shares a
        k-reciprocal neighbour, the diagonal (0) included; every pair not stored is at distance 1.
    """
    check_metric(metric)
    n = int(features.shape[0])
    if n < 2:
        return sp.csr_matrix((np.zeros(n), (np.arange(n), np.arange(n))), shape=(n, n))
    v, _ = k_reciprocal_encoding(features.float(), k1, k2, metric)
    by_col = v.tocsc()
    by_col.sort_indices()
    counts = np.diff(by_col.indptr)
    rows, cols, mins = [], [], []
    # min(V_il, V_jl) summed over the columns l both rows hold: expand every column into its pairs.
    start = 0
    while start < n:
        stop, size = start, 0
        while stop < n and (stop == start or size + counts[stop] ** 2 <= _PAIR_CHUNK):
            size += int(counts[stop]) ** 2
            stop += 1
        lo, hi = by_col.indptr[start], by_col.indptr[stop]
        entry_col = np.repeat(np.arange(start, stop), counts[start:stop])
        partners = counts[entry_col]
        first = np.repeat(np.arange(lo, hi), partners)
        offset = np.arange(partners.sum()) - np.repeat(np.cumsum(partners) - partners, partners)
        second = by_col.indptr[np.repeat(entry_col, partners)] + offset
        rows.append(by_col.indices[first])
        cols.append(by_col.indices[second])
        mins.append(np.minimum(by_col.data[first], by_col.data[second]))
        start = stop
    common = sp.csr_matrix((np.concatenate(mins), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    common.sum_duplicates()
    # Rows of V sum to 1, so sum(max) = 2 - sum(min).
    common.data = np.clip(1.0 - common.data / (2.0 - common.data), 0.0, 1.0)
    common.setdiag(0.0)
    return common.tocsr()


def dbscan(distances: sp.spmatrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN on a sparse distance matrix whose pairs not stored lie farther than ``eps``.

    Args:
        distances: ``N x N`` symmetric; stored entries are distances (explicit zeros count).
        eps: neighbourhood radius (a pair at distance ``<= eps`` are neighbours).
        min_samples: neighbours (the item included) that make an item a core item.
    Returns:
        ``N`` int64 labels: 0, 1, ... by cluster (numbered by lowest member), -1 for outliers.
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    d = sp.coo_matrix(distances)
    n = d.shape[0]
    if d.shape != (n, n):
        raise ValueError(f"distances must be square, got shape {d.shape}")
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    close = (d.data <= eps) & (d.row != d.col)
    row, col, dist = d.row[close], d.col[close], d.data[close]
    core = (np.bincount(row, minlength=n) + 1) >= min_samples
    both = core[row] & core[col]
    graph = sp.csr_matrix((np.ones(int(both.sum())), (row[both], col[both])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    core_idx = np.flatnonzero(core)
    # Number clusters by their lowest core member (core items are visited in index order).
    order = {c: i for i, c in enumerate(dict.fromkeys(component[core_idx].tolist()))}
    labels[core_idx] = [order[c] for c in component[core_idx]]
    border = ~core[row] & core[col]
    if border.any():
        r, c, dd = row[border], col[border], dist[border]
        pick = np.lexsort((c, dd, r))  # by item, then distance, then the core item's index
        r, c = r[pick], c[pick]
        first = np.r_[True, r[1:] != r[:-1]]
        labels[r[first]] = labels[c[first]]
    return labels


def pseudo_labels(features: Union[torch.Tensor, np.ndarray], eps: float = 0.6, min_samples: int = 2,
                  k1: int = 20, k2: int = 6, metric: str = "cosine") -> np.ndarray:
    """A pseudo-identity per item: DBSCAN on the k-reciprocal Jaccard distances of the features.

    Args:
        features: ``N x D`` features of the unlabeled items (normalised here for cosine).
        eps, min_samples: DBSCAN's radius (0 < eps < 1 on Jaccard distances) and core size.
        k1, k2: k-reciprocal neighbourhood sizes.
    Returns:
        ``N`` int64 labels, 0.. for clusters, -1 for outliers.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1) on Jaccard distances, got {eps}")
    feats = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).float()
    if feats.dim() != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(feats.shape)}")
    if metric == "cosine":
        feats = normalize(feats)
    return dbscan(jaccard_distances(feats, k1, k2, metric), eps, min_samples)


def validate(cfg: CfgNode) -> List[str]:
    """Problems with the ``UNLABELED.*`` values (the pool list itself is checked when it is read)."""
    u = cfg.UNLABELED
    problems = []
    if not 0.0 < float(u.EPS) < 1.0:
        problems.append(f"UNLABELED.EPS must lie in (0, 1) (a Jaccard distance), got {u.EPS!r}")
    for key in ("ROUNDS", "EPOCHS", "MIN_SAMPLES", "K1", "K2"):
        if int(getattr(u, key)) < 1:
            problems.append(f"UNLABELED.{key} must be >= 1, got {getattr(u, key)!r}")
    if float(u.BASE_LR) < 0:
        problems.append(f"UNLABELED.BASE_LR must be >= 0 (0: SOLVER.BASE_LR), got {u.BASE_LR!r}")
    return problems
