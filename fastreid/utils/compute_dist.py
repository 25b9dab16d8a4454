"""Similarity and distance of two feature sets: the evaluation's one similarity function and fast-reid's
``build_dist`` on top of it.

Scores are similarities (higher is better): ``"cosine"`` is the inner product of rows the caller has
L2-normalised, ``"euclidean"`` is minus the squared L2 distance, so that ordering by descending score
is ordering by ascending distance. A utility: it imports nothing above ``fastreid.utils``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "build_dist", "check_metric", "pairwise_scores"]

# TEST.METRIC values.
METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    """Return ``metric`` or raise naming the config key that selects it."""
    if metric not in METRICS:
        raise ValueError(f"TEST.METRIC must be one of {METRICS}, got {metric!r}")
    return metric


def pairwise_scores(query: torch.Tensor, database: torch.Tensor, metric: str) -> torch.Tensor:
    """Dense similarity of every query row to every database row (``Q x M``, float32).

    Callers keep ``Q`` small (one chunk); for cosine the rows must already be normalised.
    """
    check_metric(metric)
    q, d = query.float(), database.float()
    sims = q @ d.t()
    if metric == "euclidean":
        sims = 2 * sims - (q * q).sum(1, keepdim=True) - (d * d).sum(1)[None, :]
    return sims


def build_dist(feat_1: torch.Tensor, feat_2: torch.Tensor, metric: str = "euclidean", **kwargs: Any) -> np.ndarray:
    """Distances ``len(feat_1) x len(feat_2)`` as fast-reid defines them.

    Args:
        feat_1, feat_2: 2-D feature tensors.
        metric: "euclidean" (squared euclidean distance) or "cosine" (1 - cosine similarity of the
            L2-normalised rows). fast-reid's "jaccard" (k-reciprocal re-ranking) is ``TEST.RERANK`` here.
    Returns:
        A float32 numpy array.
    """
    if metric == "euclidean":
        return (-pairwise_scores(feat_1, feat_2, "euclidean")).clamp_min(0).cpu().numpy()
    if metric == "cosine":
        normed_1, normed_2 = F.normalize(feat_1.float(), dim=1), F.normalize(feat_2.float(), dim=1)
        return (1 - pairwise_scores(normed_1, normed_2, "cosine")).cpu().numpy()
    raise ValueError(f"build_dist: metric must be 'euclidean' or 'cosine', got {metric!r} "
                     f"(k-reciprocal re-ranking, fast-reid's 'jaccard', is TEST.RERANK.ENABLED here)")
