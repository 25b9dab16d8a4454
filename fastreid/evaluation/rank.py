"""fast-reid compatible ``evaluate_rank`` on a given distance matrix (for ported scripts).

It keeps fast-reid's contract (same id *and* camera removed, queries without positives skipped,
CMC averaged over the remaining queries) but ranks with a stable sort and never argsorts the matrix:
the work is done by :func:`fastreid.evaluation.metrics.rank_positives`.
"""
from __future__ import annotations

import logging
from typing import List, Tuple

import numpy as np
import torch

from .metrics import cmc_curve, per_query_metrics, rank_positives
from .search import rows_per_chunk

logger = logging.getLogger(__name__)


def evaluate_rank(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                  g_camids: np.ndarray, max_rank: int = 50) -> Tuple[np.ndarray, List[float], List[float]]:
    """CMC, AP and INP of a ``Q x G`` distance matrix (smaller is closer).

    Returns:
        (cmc, all_AP, all_INP): ``cmc`` has ``max_rank`` entries (fractions); the lists hold one value
        per query that has at least one positive.
    """
    distmat = np.asarray(distmat)
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        logger.warning("Gallery has %d items, fewer than max_rank=%d: max_rank reduced", num_g, max_rank)
        max_rank = num_g
    d = torch.from_numpy(distmat)
    res = rank_positives(lambda s, e: -d[s:e], num_q, q_pids, g_pids, q_camids, g_camids,
                         step=rows_per_chunk(num_g, 48))
    pq = per_query_metrics(res["ranks"], res["num_pos"])
    valid = pq.valid
    if not valid.any():
        raise ValueError("evaluate_rank: no query has a positive in the gallery")
    return cmc_curve(pq.first_rank[valid], max_rank), pq.ap[valid].tolist(), pq.inp[valid].tolist()
