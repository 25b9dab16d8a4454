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
                  g_camids: np.ndarray, max_rank: int = 50, use_metric_cuhk03: bool = False,
                  use_cython: bool = True) -> Tuple[np.ndarray, List[float], List[float]]:
    """CMC, AP and INP of a ``Q x G`` distance matrix (smaller is closer).

    ``use_cython`` (fast-reid's switch between two implementations) has no effect; fast-reid's CUHK03
    protocol (``use_metric_cuhk03``) is not implemented and raises.

    Returns:
        (cmc, all_AP, all_INP): ``cmc`` has ``max_rank`` entries (fractions); the lists hold one value
        per query that has at least one positive.
    """
    if use_metric_cuhk03:
        raise NotImplementedError("evaluate_rank(use_metric_cuhk03=True): the CUHK03 single-shot protocol is not "
                                  "implemented here; use the default protocol")
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


def __getattr__(name: str):
    if name == "eval_market1501":  # fast-reid's inner function: the error names the alternative
        from fastreid.compat.api import refuse

        raise refuse(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
