"""fast-reid's ``build_dist``: a dense distance matrix between two feature sets, computed by the
evaluation's one similarity function (:func:`fastreid.evaluation.search.pairwise_scores`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["build_dist"]


def build_dist(feat_1: torch.Tensor, feat_2: torch.Tensor, metric: str = "euclidean", **kwargs: Any) -> np.ndarray:
    """Distances ``len(feat_1) x len(feat_2)`` as fast-reid defines them.

    Args:
        feat_1, feat_2: 2-D feature tensors.
        metric: "euclidean" (squared euclidean distance) or "cosine" (1 - cosine similarity of the
            L2-normalised rows). fast-reid's "jaccard" (k-reciprocal re-ranking) is ``TEST.RERANK`` here.
    Returns:
        A float32 numpy array.
    """
    from fastreid.evaluation.search import normalize, pairwise_scores

    if metric == "euclidean":
        return (-pairwise_scores(feat_1, feat_2, "euclidean")).clamp_min(0).cpu().numpy()
    if metric == "cosine":
        return (1 - pairwise_scores(normalize(feat_1), normalize(feat_2), "cosine")).cpu().numpy()
    raise ValueError(f"build_dist: metric must be 'euclidean' or 'cosine', got {metric!r} "
                     f"(k-reciprocal re-ranking, fast-reid's 'jaccard', is TEST.RERANK.ENABLED here)")
