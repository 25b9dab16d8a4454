"""The challenge submission file ``result.npy`` and its scoring against ground truth.

``result.npy`` is an int64 array of shape ``(n_queries, TEST.TOPK)``: row i belongs to the i-th line
of the query list and holds 0-based database indices, best match first.
"""
from __future__ import annotations

import logging
from typing import Dict, Sequence

import numpy as np

from ..utils.file_io import atomic_open

logger = logging.getLogger(__name__)


def write_result(path: str, topk_indices: np.ndarray) -> str:
    """Write the int64 ``n_queries x k`` index array atomically (complete under ``path`` or absent)."""
    arr = np.ascontiguousarray(np.asarray(topk_indices, dtype=np.int64))
    if arr.ndim != 2:
        raise ValueError(f"result.npy must be 2-D (n_queries, k), got shape {arr.shape}")
    with atomic_open(path, "wb") as f:
        np.save(f, arr)
    logger.info("Wrote %s: %d queries x top-%d database indices", path, arr.shape[0], arr.shape[1])
    return path


def score_submission(result: np.ndarray, q_labels: Sequence, db_labels: Sequence) -> Dict[str, float]:
    """Score a ``result.npy`` array against labels, in percent.

    Returns:
        ``mAP@10`` (sum over correct entries in the top 10 of precision at that rank, divided by
        min(10, number of correct database items)) and ``Recall@1/5/10`` (fraction of queries with at
        least one correct entry in the first k). Queries without any correct database item are
        excluded and counted in ``num_queries_without_positive``.
    """
    result = np.asarray(result)
    q_labels, db_labels = np.asarray(q_labels), np.asarray(db_labels)
    if result.ndim != 2 or result.shape[0] != len(q_labels):
        raise ValueError(f"result has shape {result.shape}; expected ({len(q_labels)}, k)")
    if result.size and (result.min() < 0 or result.max() >= len(db_labels)):
        raise ValueError(f"result holds indices outside the database range [0, {len(db_labels)})")
    top = result[:, :10]
    hits = db_labels[top] == q_labels[:, None]
    uniq, counts = np.unique(db_labels, return_counts=True)
    pos = np.searchsorted(uniq, q_labels)
    pos = np.minimum(pos, len(uniq) - 1)
    num_rel = np.where(uniq[pos] == q_labels, counts[pos], 0)
    valid = num_rel > 0
    if not valid.any():
        raise ValueError("score_submission: no query label occurs in the database labels")
    precision = np.cumsum(hits, 1) / np.arange(1, top.shape[1] + 1)[None, :]
    ap10 = (precision * hits).sum(1) / np.minimum(10, np.maximum(num_rel, 1))
    out = {"mAP@10": 100 * float(ap10[valid].mean())}
    for k in (1, 5, 10):
        out[f"Recall@{k}"] = 100 * float(hits[:, :k].any(1)[valid].mean())
    out["num_queries_without_positive"] = int((~valid).sum())
    return out
