"""Alpha-weighted query expansion (alpha-QE) and database-side augmentation (DBA).

One pass replaces a feature ``f_i`` by ``mean_{j in N_k(i)} f_j * s_ij ** alpha`` where ``N_k(i)`` are
the k rows most similar to row i by cosine similarity ``s`` (row i itself included) and the ``f_j`` are
the *un-normalised* features of the previous pass; passes re-normalise only to find neighbours. This
is the reference submission's algorithm, vectorised: neighbours come from one k-NN search instead of a
dense ``N x N`` matrix, and the weighted means are formed in row chunks.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .search import knn, normalize

# Rows whose k neighbour features are gathered at once (chunk x k x dim floats).
_GATHER_ROWS = 1024


def weighted_neighbour_mean(pool: torch.Tensor, nbr_idx: torch.Tensor, nbr_sims: torch.Tensor,
                            alpha: float) -> torch.Tensor:
    """Row i of the result is ``mean_t pool[nbr_idx[i, t]] * nbr_sims[i, t] ** alpha``.

    Args:
        pool: ``N x D`` features the neighbours index into.
        nbr_idx: ``M x k`` int64 indices into ``pool``.
        nbr_sims: ``M x k`` cosine similarities of those neighbours.
        alpha: weight exponent (a negative similarity with a fractional alpha gives NaN, as
            ``numpy.power`` does in the reference).
    Returns:
        ``M x D`` float32 tensor.
    """
    pool = pool.float()
    weights = nbr_sims.float().pow(alpha)
    out = torch.empty(nbr_idx.shape[0], pool.shape[1], dtype=torch.float32)
    for s in range(0, nbr_idx.shape[0], _GATHER_ROWS):
        gathered = pool[nbr_idx[s:s + _GATHER_ROWS]]
        out[s:s + _GATHER_ROWS] = (gathered * weights[s:s + _GATHER_ROWS, :, None]).mean(1)
    return out


def aqe(query_feat: torch.Tensor, gallery_feat: torch.Tensor, qe_times: int = 1, qe_k: int = 10,
        alpha: float = 3.0, backend: str = "torch") -> Tuple[torch.Tensor, torch.Tensor]:
    """Alpha-QE over queries and database together (fast-reid compatible signature).

    Every row of ``[query; gallery]`` is expanded with its ``qe_k`` nearest rows of the same set.

    Returns:
        The expanded (query, gallery) features, un-normalised float32.
    """
    num_query = query_feat.shape[0]
    feats = torch.cat([query_feat.float(), gallery_feat.float()], dim=0)
    for _ in range(qe_times):
        normed = normalize(feats)
        sims, idx = knn(normed, normed, qe_k, "cosine", backend)
        feats = weighted_neighbour_mean(feats, idx, sims, alpha)
    return feats[:num_query], feats[num_query:]


def aqe_queries_only(query_feat: torch.Tensor, gallery_feat: torch.Tensor, qe_times: int = 1, qe_k: int = 10,
                     alpha: float = 3.0, backend: str = "torch") -> torch.Tensor:
    """Alpha-QE of the queries alone (``TEST.AQE.MODE: query``); the database is left as it is.

    A query's ``qe_k`` neighbours are itself plus its ``qe_k - 1`` nearest database items, so with no
    database neighbours it is unchanged up to its own weight.
    """
    num_query = query_feat.shape[0]
    gallery = gallery_feat.float()
    gallery_normed = normalize(gallery)
    query = query_feat.float()
    for _ in range(qe_times):
        q_normed = normalize(query)
        self_sim = (q_normed * q_normed).sum(1, keepdim=True)
        self_idx = torch.arange(num_query)[:, None]
        if qe_k > 1:
            sims, idx = knn(q_normed, gallery_normed, qe_k - 1, "cosine", backend)
            sims, idx = torch.cat([self_sim, sims], 1), torch.cat([self_idx, idx + num_query], 1)
        else:
            sims, idx = self_sim, self_idx
        query = weighted_neighbour_mean(torch.cat([query, gallery]), idx, sims, alpha)
    return query


def dba(gallery_feat: torch.Tensor, k: int = 5, alpha: float = 3.0, backend: str = "torch") -> torch.Tensor:
    """Database-side augmentation: one alpha-weighted pass over the database alone (itself included)."""
    gallery = gallery_feat.float()
    normed = normalize(gallery)
    sims, idx = knn(normed, normed, k, "cosine", backend)
    return weighted_neighbour_mean(gallery, idx, sims, alpha)
