"""Choose post-processing on a labeled split, falling back to none unless the gain beats its noise.

Alpha-QE, DBA and k-reciprocal re-ranking help a strong model (neighbours are mostly the same patent)
and hurt a weak one (they average in wrong patents). The choice is a list of candidate option sets
(``RetrievalOptions``; the first is the baseline: none of the tuned steps) scored by one function,
``score_options`` (the one pipeline, re-ranking included, then the exact per-query metrics): each
expansion ``(k, alpha)``, each DBA ``k``, re-ranking, then combinations of the best of each step that
gained on average. A candidate replaces the baseline only when its gain on the criterion is
larger than query-to-query noise: a paired bootstrap over queries gives a one-sided lower confidence
bound of the mean gain, at ``confidence`` corrected for the number of candidates (Bonferroni), and the
bound must exceed ``min_gain``. The recorded choice (every post-processing field of the chosen options)
is then applied to sets without labels (the challenge test set) and to search indexes of the same model.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.file_io import atomic_open
from .metrics import PerQueryMetrics, per_query_metrics, summarize
from .pipeline import POST_PROCESSING_FIELDS, QE_MODES, RetrievalOptions, labeled_ranks, post_process, prepare_gallery

# Metrics recorded for every candidate (percent).
TUNED_METRICS = ("mAP", "mAP@10", "Rank-1")
# Bootstrap resamples of the queries (seeded: the same choice on every run).
BOOTSTRAP_RESAMPLES = 2000
_BOOTSTRAP_CHUNK = 100


@dataclass
class QEChoice:
    """The chosen post-processing and the scores of every candidate tried.

    ``options`` holds the chosen ``POST_PROCESSING_FIELDS`` (DBA, expansion, re-ranking, with their
    parameters): what unlabeled sets and search indexes apply. ``qe_k``/``alpha`` repeat its expansion
    (``qe_k`` 0 = none); ``chosen`` is the chosen row of ``candidates`` (0: the baseline).
    """

    qe_k: int
    alpha: float
    score: float
    baseline: float
    criterion: str
    candidates: List[Dict[str, Any]] = field(default_factory=list)
    confidence: float = 0.0
    min_gain: float = 0.0
    options: Dict[str, Any] = field(default_factory=dict)
    chosen: int = 0

    @property
    def enabled(self) -> bool:
        """Whether the chosen post-processing expands queries."""
        return self.qe_k > 0

    @classmethod
    def none(cls) -> "QEChoice":
        """No expansion, with no scores (before a choice is made)."""
        return cls(qe_k=0, alpha=0.0, score=0.0, baseline=0.0, criterion="")


def expansion_candidates(base: RetrievalOptions, ks: Sequence[int],
                         alphas: Sequence[float]) -> List[RetrievalOptions]:
    """``base`` without expansion, then ``base`` with every ``(k, alpha)`` pair (``k`` counts the item
    itself, so ``k`` 1 is a no-op and skipped)."""
    out = [base.replace(qe_k=0)]
    for k in sorted({int(k) for k in ks if int(k) > 1}):
        out += [base.replace(qe_k=k, qe_alpha=a) for a in sorted({float(a) for a in alphas})]
    return out


def single_step_candidates(baseline: RetrievalOptions, ks: Sequence[int], alphas: Sequence[float],
                           dba_ks: Sequence[int] = (), rerank: bool = False) -> List[RetrievalOptions]:
    """``baseline``, each expansion of :func:`expansion_candidates`, DBA with each of ``dba_ks`` (alpha as
    ``baseline.dba_alpha``) and, with ``rerank``, k-reciprocal re-ranking: one step at a time."""
    out = expansion_candidates(baseline, ks, alphas)
    out += [baseline.replace(dba=True, dba_k=k) for k in sorted({int(k) for k in dba_ks})]
    if rerank:
        out.append(baseline.replace(rerank=True))
    return out


def _step_of(options: RetrievalOptions, baseline: RetrievalOptions) -> str:
    """Which single step ``options`` adds to ``baseline``: ``qe``, ``dba`` or ``rerank``."""
    if options.expands and not baseline.expands:
        return "qe"
    return "dba" if options.dba and not baseline.dba else "rerank"


def combined_candidates(singles: Sequence[RetrievalOptions], gains: Sequence[float]) -> List[RetrievalOptions]:
    """Combinations of the best single candidate of each step (by mean gain, only steps whose best gained).

    Args:
        singles: the output of :func:`single_step_candidates` (``singles[0]`` the baseline).
        gains: mean gain of each over the baseline (``gains[0]`` 0).
    Returns:
        One candidate per combination of two or more of those best steps (DBA + expansion, expansion +
        re-ranking, ...), each step with its best setting.
    """
    baseline, best = singles[0], {}
    for options, gain in zip(singles[1:], gains[1:]):
        step = _step_of(options, baseline)
        if gain > 0 and gain > best.get(step, (0.0, None))[0]:
            best[step] = (gain, options)
    out = []
    for size in range(2, len(best) + 1):
        for steps in combinations(sorted(best), size):
            changes: Dict[str, Any] = {}
            for step in steps:
                chosen = best[step][1]
                changes.update({"qe": dict(qe_k=chosen.qe_k, qe_alpha=chosen.qe_alpha),
                                "dba": dict(dba=True, dba_k=chosen.dba_k), "rerank": dict(rerank=True)}[step])
            out.append(baseline.replace(**changes))
    return out


def score_options(query: torch.Tensor, gallery: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                  options: RetrievalOptions, q_cam: Optional[np.ndarray] = None,
                  g_cam: Optional[np.ndarray] = None, gallery_prepared: bool = False) -> PerQueryMetrics:
    """Per-query metrics of one candidate: the pipeline's ``post_process`` with ``options``, then exact ranks
    (re-ranked when ``options.rerank``, as the evaluator ranks)."""
    q, g = post_process(query, gallery, options, gallery_prepared=gallery_prepared)
    res = labeled_ranks(q, g, q_pids, g_pids, options, q_cam, g_cam)
    return per_query_metrics(res["ranks"], res["num_pos"])


def per_query_values(metrics: PerQueryMetrics, criterion: str) -> np.ndarray:
    """The criterion per valid query, in percent (its mean is the criterion)."""
    v = metrics.valid
    if criterion == "mAP":
        values = metrics.ap[v]
    elif criterion == "mAP@10":
        values = metrics.ap_at_10[v]
    elif criterion == "Rank-1":
        values = (metrics.first_rank[v] <= 1).astype(np.float64)
    else:
        raise ValueError(f"TEST.AQE.AUTO_CRITERION must be one of {TUNED_METRICS}, got {criterion!r}")
    return 100.0 * np.asarray(values, dtype=np.float64)


def gain_lower_bound(diff: np.ndarray, confidence: float, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> float:
    """One-sided lower confidence bound of ``mean(diff)`` by a bootstrap over its entries (queries).

    Args:
        diff: per-query gains of a candidate over the baseline (paired: same queries).
        confidence: e.g. 0.95; 0 returns the mean itself (no test).
        resamples: bootstrap resamples (seeded, so the bound is reproducible).
    Returns:
        The ``1 - confidence`` quantile of the resampled mean gains.
    """
    diff = np.asarray(diff, dtype=np.float64)
    if confidence <= 0 or len(diff) == 0:
        return float(diff.mean()) if len(diff) else 0.0
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        rows = rng.integers(0, len(diff), size=(min(_BOOTSTRAP_CHUNK, resamples - start), len(diff)))
        means.append(diff[rows].mean(1))
    return float(np.quantile(np.concatenate(means), 1.0 - confidence))


def pick(values: Sequence[np.ndarray], confidence: float, min_gain: float = 0.0) -> Tuple[int, List[Dict[str, float]]]:
    """Index of the chosen candidate (0, the baseline, unless another one's gain is real) and each one's gain.

    A candidate qualifies when the lower bound of its mean gain over ``values[0]``, at ``confidence``
    corrected for the number of candidates compared (Bonferroni), exceeds ``min_gain``; of those, the
    one with the largest mean wins. Ties keep the baseline.
    """
    others = max(1, len(values) - 1)
    level = 1.0 - (1.0 - confidence) / others if confidence > 0 else 0.0
    rows: List[Dict[str, float]] = [dict(gain=0.0, gain_low=0.0)]
    best, best_gain = 0, 0.0
    for i, v in enumerate(values[1:], start=1):
        diff = np.asarray(v) - np.asarray(values[0])
        gain, low = float(diff.mean()), gain_lower_bound(diff, level, seed=i)
        rows.append(dict(gain=gain, gain_low=low))
        if gain > 0 and low > min_gain and gain > best_gain:
            best, best_gain = i, gain
    return best, rows


def choose_options(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                   candidates: Sequence[RetrievalOptions], *, criterion: str = "mAP@10", confidence: float = 0.95,
                   min_gain: float = 0.0, q_cam: Optional[Sequence] = None,
                   g_cam: Optional[Sequence] = None) -> Tuple[int, List[Dict[str, float]]]:
    """Score every candidate with :func:`score_options` and :func:`pick` one; ``candidates[0]`` is the baseline.

    Args:
        query, gallery: raw features (the candidates' own DBA, expansion and normalisation are applied).
        q_pids, g_pids: identities; ``q_cam``/``g_cam`` optional cameras (same-camera filter).
        criterion: the metric compared, one of ``TUNED_METRICS``.
    Returns:
        (index of the chosen candidate, one row per candidate: ``TUNED_METRICS`` in percent, ``gain`` and
        ``gain_low`` on the criterion).
    """
    rows, values = score_candidates(query, gallery, q_pids, g_pids, candidates, criterion, q_cam, g_cam)
    best, gains = pick(values, confidence, min_gain)
    return best, [dict(row, **gain) for row, gain in zip(rows, gains)]


def score_candidates(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                     candidates: Sequence[RetrievalOptions], criterion: str = "mAP@10",
                     q_cam: Optional[Sequence] = None,
                     g_cam: Optional[Sequence] = None) -> Tuple[List[Dict[str, Any]], List[np.ndarray]]:
    """:func:`score_options` of every candidate: (one row per candidate: ``steps`` and ``TUNED_METRICS`` in
    percent; per-query values of ``criterion``). The DBA database is computed once per setting."""
    if criterion not in TUNED_METRICS:
        raise ValueError(f"TEST.AQE.AUTO_CRITERION must be one of {TUNED_METRICS}, got {criterion!r}")
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cam = None if q_cam is None else np.asarray(q_cam)
    g_cam = None if g_cam is None else np.asarray(g_cam)
    prepared: Dict[Tuple[Any, ...], torch.Tensor] = {}
    rows: List[Dict[str, Any]] = []
    values = []
    for options in candidates:
        key = (options.dba, options.dba_k, options.dba_alpha, options.backend)
        if key not in prepared:
            prepared[key] = prepare_gallery(gallery, options)
        metrics = score_options(query, prepared[key], q_pids, g_pids, options, q_cam, g_cam, gallery_prepared=True)
        summary = summarize(metrics)
        rows.append(dict(steps=options.describe(), **{name: float(summary[name]) for name in TUNED_METRICS}))
        values.append(per_query_values(metrics, criterion))
    return rows, values


def tune_post_processing(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                         ks: Sequence[int], alphas: Sequence[float], *, dba_ks: Sequence[int] = (),
                         rerank: bool = False, criterion: str = "mAP@10", q_cam: Optional[Sequence] = None,
                         g_cam: Optional[Sequence] = None, confidence: float = 0.95, min_gain: float = 0.0,
                         base: Optional[RetrievalOptions] = None) -> QEChoice:
    """Choose among no post-processing, each single step and combinations of the best steps.

    The candidates are :func:`single_step_candidates` (expansions ``ks`` x ``alphas``, DBA ``dba_ks``,
    re-ranking when ``rerank``), scored first, then :func:`combined_candidates` of those; :func:`pick`
    compares them all with the baseline (Bonferroni over every candidate scored).

    Args:
        query, gallery: raw features (before any post-processing or normalisation).
        dba_ks, rerank: DBA and re-ranking become candidates (empty / False: they stay as in ``base``).
        confidence, min_gain: a candidate is chosen only when its gain's lower bound at ``confidence``
            exceeds ``min_gain`` points (``confidence`` 0: any mean gain above ``min_gain``).
        base: the other retrieval options (metric, backend, expansion passes and mode, DBA alpha,
            re-ranking parameters; default ``RetrievalOptions()``).
    Returns:
        A ``QEChoice``; ``candidates[0]`` is the baseline (no expansion; no DBA / re-ranking when tuned).
    """
    base = base or RetrievalOptions()
    baseline = base.replace(qe_k=0, dba=base.dba and not dba_ks, rerank=base.rerank and not rerank)
    singles = single_step_candidates(baseline, ks, alphas, dba_ks, rerank)
    rows, values = score_candidates(query, gallery, q_pids, g_pids, singles, criterion, q_cam, g_cam)
    combos = combined_candidates(singles, [float(np.mean(v - values[0])) for v in values])
    if combos:
        more_rows, more_values = score_candidates(query, gallery, q_pids, g_pids, combos, criterion, q_cam, g_cam)
        rows, values = rows + more_rows, values + more_values
    candidates = singles + combos
    best, gains = pick(values, confidence, min_gain)
    rows = [dict(qe_k=o.qe_k, alpha=o.qe_alpha if o.qe_k else 0.0, dba_k=o.dba_k if o.dba else 0, rerank=o.rerank,
                 **row, **gain) for o, row, gain in zip(candidates, rows, gains)]
    chosen = candidates[best]
    return QEChoice(qe_k=chosen.qe_k, alpha=rows[best]["alpha"], score=rows[best][criterion],
                    baseline=rows[0][criterion], criterion=criterion, candidates=rows, confidence=confidence,
                    min_gain=min_gain, options=chosen.post_processing, chosen=best)


def tune_query_expansion(query: torch.Tensor, gallery: torch.Tensor, q_pids: Sequence, g_pids: Sequence,
                         ks: Sequence[int], alphas: Sequence[float], *, qe_time: int = 1, mode: str = "all",
                         criterion: str = "mAP@10", metric: str = "cosine", backend: str = "torch",
                         q_cam: Optional[Sequence] = None, g_cam: Optional[Sequence] = None,
                         confidence: float = 0.95, min_gain: float = 0.0,
                         base: Optional[RetrievalOptions] = None) -> QEChoice:
    """:func:`tune_post_processing` with expansions only (DBA and re-ranking as in ``base``).

    ``base`` defaults to ``metric``, ``backend``, ``qe_time`` and ``mode``; ``candidates[0]`` is no expansion.
    """
    if mode not in QE_MODES:
        raise ValueError(f"TEST.AQE.MODE must be one of {QE_MODES}, got {mode!r}")
    if base is None:
        base = RetrievalOptions(metric=metric, backend=backend, qe_times=qe_time, qe_mode=mode)
    return tune_post_processing(query, gallery, q_pids, g_pids, ks, alphas, criterion=criterion, q_cam=q_cam,
                                g_cam=g_cam, confidence=confidence, min_gain=min_gain, base=base)


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
        options = dict(data.get("options", {}))
        unknown = set(options) - set(POST_PROCESSING_FIELDS)
        if unknown:
            raise ValueError(f"unknown post-processing options {sorted(unknown)}")
        RetrievalOptions().replace(**options)  # the recorded values are checked like the config's
        return QEChoice(qe_k=int(data["qe_k"]), alpha=float(data["alpha"]), score=float(data["score"]),
                        baseline=float(data["baseline"]), criterion=str(data["criterion"]),
                        candidates=list(data.get("candidates", [])), confidence=float(data.get("confidence", 0.0)),
                        min_gain=float(data.get("min_gain", 0.0)), options=options, chosen=int(data.get("chosen", 0)))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"TEST.AQE.AUTO: no post-processing choice at {path}; evaluate a labeled split first "
            f"(put it before the unlabeled set in DATASETS.TESTS) or set TEST.AQE.AUTO_FILE") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TEST.AQE.AUTO: unreadable post-processing choice {path}: {e}") from None
