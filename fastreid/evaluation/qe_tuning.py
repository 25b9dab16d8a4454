"""Choose query expansion on a labeled split, falling back to none when it does not help.

Alpha-QE helps a strong model (neighbours are mostly the same patent) and hurts a weak one (it
averages in wrong patents). ``tune_query_expansion`` scores every ``(QE_K, ALPHA)`` candidate with
the exact metrics of ``metrics.py`` and keeps expansion only when it beats no expansion on the
chosen metric; the choice is then applied to sets without labels (the challenge test set).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..utils.file_io import atomic_open
from .metrics import per_query_metrics, rank_positives_chunked, summarize
from .query_expansion import aqe, aqe_queries_only
from .search import normalize

# Metrics recorded for every candidate (percent).
TUNED_METRICS = ("mAP", "mAP@10", "Rank-1")


@dataclass
class QEChoice:
    """The chosen expansion (``qe_k`` 0 = none) and the scores of every candidate tried."""

    qe_k: int
    alpha: float
    score: float
    baseline: float
    criterion: str
    candidates: List[Dict[str, float]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.qe_k > 0

    @classmethod
    def none(cls) -> "QEChoice":
        """No expansion, with no scores (before a choice is made)."""
        return cls(qe_k=0, alpha=0.0, score=0.0, baseline=0.0, criterion="")


def _metrics(query: torch.Tensor, gallery: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
             q_cam: Optional[np.ndarray], g_cam: Optional[np.ndarray], metric: str) -> Dict[str, float]:
    if metric == "cosine":
        query, gallery = normalize(query), normalize(gallery)
    res = rank_positives_chunked(query, gallery, q_pids, g_pids, q_cam, g_cam, metric)
    summary = summarize(per_query_metrics(res["ranks"], res["num_pos"]))
    return {name: float(summary[name]) for name in TUNED_METRICS}


def tune_query_expansion(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                         ks: Sequence[int], alphas: Sequence[float], *, qe_time: int = 1, mode: str = "all",
                         criterion: str = "mAP@10", metric: str = "cosine", backend: str = "torch",
                         q_cam: Optional[Sequence] = None, g_cam: Optional[Sequence] = None) -> QEChoice:
    """Score no expansion and every ``(k, alpha)`` pair; return the best, or none unless one beats it.

    Args:
        query, gallery: raw features (before any expansion or normalisation).
        q_pids, g_pids: identities; ``q_cam``/``g_cam`` optional cameras (same-camera filter).
        ks, alphas: the candidate grid; ``k`` counts the item itself, so ``k`` 1 is a no-op and skipped.
        criterion: the metric to maximise, one of ``TUNED_METRICS``.
    Returns:
        A ``QEChoice``; ties with no expansion keep no expansion.
    """
    if criterion not in TUNED_METRICS:
        raise ValueError(f"TEST.AQE.AUTO_CRITERION must be one of {TUNED_METRICS}, got {criterion!r}")
    if mode not in ("all", "query"):
        raise ValueError(f"TEST.AQE.MODE must be 'all' or 'query', got {mode!r}")
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cam = None if q_cam is None else np.asarray(q_cam)
    g_cam = None if g_cam is None else np.asarray(g_cam)
    base = _metrics(query.float(), gallery.float(), q_pids, g_pids, q_cam, g_cam, metric)
    rows = [dict(qe_k=0, alpha=0.0, **base)]
    best = rows[0]
    for k in sorted({int(k) for k in ks if int(k) > 1}):
        for alpha in sorted({float(a) for a in alphas}):
            if mode == "all":
                q, g = aqe(query, gallery, qe_time, k, alpha, backend)
            else:
                q, g = aqe_queries_only(query, gallery, qe_time, k, alpha, backend), gallery.float()
            row = dict(qe_k=k, alpha=alpha, **_metrics(q, g, q_pids, g_pids, q_cam, g_cam, metric))
            rows.append(row)
            if row[criterion] > best[criterion]:
                best = row
    return QEChoice(qe_k=int(best["qe_k"]), alpha=float(best["alpha"]), score=best[criterion],
                    baseline=base[criterion], criterion=criterion, candidates=rows)


def choice_path(cfg: Any, output_dir: Optional[str] = None) -> str:
    """Where ``TEST.AQE.AUTO`` records its choice: ``TEST.AQE.AUTO_FILE``, else ``<output_dir>/qe_choice.json``
    (``output_dir`` defaults to ``OUTPUT_DIR``)."""
    return cfg.TEST.AQE.AUTO_FILE or os.path.join(cfg.OUTPUT_DIR if output_dir is None else output_dir,
                                                  "qe_choice.json")


def recorded_choice(cfg: Any) -> Optional[QEChoice]:
    """The recorded choice when ``TEST.AQE.AUTO`` is on (an error naming the file when missing), else None."""
    return load_choice(choice_path(cfg)) if cfg.TEST.AQE.AUTO else None


def save_choice(choice: QEChoice, path: str, source: str) -> None:
    """Write the choice as JSON (atomically), with the split it was tuned on."""
    with atomic_open(path, "w") as f:
        json.dump(dict(asdict(choice), tuned_on=source), f, indent=2)


def load_choice(path: str) -> QEChoice:
    """Read a choice written by ``save_choice``; a missing or malformed file names itself."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return QEChoice(qe_k=int(data["qe_k"]), alpha=float(data["alpha"]), score=float(data["score"]),
                        baseline=float(data["baseline"]), criterion=str(data["criterion"]),
                        candidates=list(data.get("candidates", [])))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"TEST.AQE.AUTO: no query-expansion choice at {path}; evaluate a labeled split first "
            f"(put it before the unlabeled set in DATASETS.TESTS) or set TEST.AQE.AUTO_FILE") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TEST.AQE.AUTO: unreadable query-expansion choice {path}: {e}") from None
