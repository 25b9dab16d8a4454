"""The one retrieval pipeline: features in, ranked lists out, the same for every caller.

``post_process(query, gallery, options)`` applies database-side augmentation, alpha query expansion
and L2 normalisation; ``rank(query, gallery, k, options)`` searches (exact, or through a faiss
structure) and optionally re-ranks. ``RetrievalOptions`` says which steps run and how; it is built
from the config (``RetrievalOptions.from_config``) together with a recorded ``TEST.AQE.AUTO`` choice,
and stored in a search index's manifest. The evaluator (``ReidEvaluator``), ``Index.search``,
``tools/search.py`` and the search page only decide where features come from and call these two
functions, so they give the same answer for the same features.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np
import torch

from .metrics import rank_positives_chunked
from .query_expansion import aqe, aqe_queries_only, dba
from .rerank import k_reciprocal_rerank
from fastreid.config.checks import choice_problem

from .search import BACKENDS, INDEX_TYPES, METRICS, FaissIndex, knn, normalize, recheck, resolve_backend

if TYPE_CHECKING:  # pragma: no cover
    from .qe_tuning import QEChoice

# TEST.AQE.MODE: "all" expands queries and database together (the reference; the database then
# depends on the query set), "query" expands each query against the database alone.
QE_MODES = ("all", "query")
# Candidates per query that k-reciprocal re-ranking re-orders (ranks beyond keep their place).
RERANK_CANDIDATES = 100
# The fields of ``RetrievalOptions`` that post-process features or re-order results (not the search
# structure): what a ``TEST.AQE.AUTO`` choice records and applies.
POST_PROCESSING_FIELDS = ("dba", "dba_k", "dba_alpha", "qe_k", "qe_alpha", "qe_times", "qe_mode", "rerank",
                          "rerank_k1", "rerank_k2", "rerank_lambda")


@dataclass(frozen=True)
class RetrievalOptions:
    """Every choice between features and a ranked list (docs/evaluation.md, "Pipeline").

    ``qe_k`` 0 means no query expansion (``k`` counts the item itself); ``dba`` and ``rerank`` switch
    their steps; ``backend``/``index``/``nlist``/``nprobe``/``pq_m``/``refine`` choose the search
    (``TEST.SEARCH.*``).
    """

    metric: str = "cosine"
    dba: bool = False
    dba_k: int = 5
    dba_alpha: float = 3.0
    qe_k: int = 0
    qe_alpha: float = 3.0
    qe_times: int = 1
    qe_mode: str = "all"
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    backend: str = "auto"
    index: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    pq_m: int = 0
    refine: int = 4

    def __post_init__(self) -> None:
        problems = (choice_problem("TEST.METRIC", self.metric, METRICS)
                    + choice_problem("TEST.SEARCH.INDEX", self.index, INDEX_TYPES)
                    + choice_problem("TEST.AQE.MODE", self.qe_mode, QE_MODES)
                    + choice_problem("TEST.SEARCH.BACKEND", self.backend, BACKENDS))
        if problems:
            raise ValueError("; ".join(problems))
        if self.qe_k < 0 or self.qe_times < 1 or self.dba_k < 1:
            raise ValueError(f"query expansion needs QE_K >= 0 and QE_TIME >= 1, DBA needs K >= 1; got "
                             f"QE_K {self.qe_k}, QE_TIME {self.qe_times}, DBA.K {self.dba_k}")
        if self.nlist < 1 or self.nprobe < 1 or self.refine < 0:
            raise ValueError(f"TEST.SEARCH.NLIST and NPROBE must be >= 1 and REFINE >= 0, got {self.nlist}, "
                             f"{self.nprobe}, {self.refine}")

    @property
    def expands(self) -> bool:
        """Whether query expansion runs."""
        return self.qe_k > 0

    @property
    def candidates(self) -> int:
        """Candidates per result that the faiss search returns: ``refine`` for IVF-PQ (re-scored exactly), else 1."""
        return max(1, self.refine) if self.index == "ivf-pq" else 1

    @property
    def changes_gallery(self) -> bool:
        """Whether post-processing rewrites the database per query set (expansion in mode ``all``), so a
        structure built over the stored database no longer applies."""
        return self.expands and self.qe_mode == "all"

    @property
    def depends_on_query_set(self) -> bool:
        """Whether a query's answer depends on the other queries searched with it: expansion in mode
        ``all`` expands the database with them, and k-reciprocal re-ranking builds its neighbour graph over
        queries and database together. Such queries must be searched as one set to reproduce ``result.npy``."""
        return self.changes_gallery or self.rerank

    @property
    def post_processing(self) -> Dict[str, Any]:
        """The values of ``POST_PROCESSING_FIELDS`` (what a recorded choice stores)."""
        return {name: getattr(self, name) for name in POST_PROCESSING_FIELDS}

    def describe(self) -> str:
        """The post-processing steps in a few words, e.g. ``DBA k5 + QE k3 a2 + re-rank`` (``none``)."""
        steps = [f"DBA k{self.dba_k}" if self.dba else "",
                 f"QE k{self.qe_k} a{self.qe_alpha:g}" if self.expands else "",
                 "re-rank" if self.rerank else ""]
        return " + ".join(s for s in steps if s) or "none"

    @classmethod
    def from_config(cls, cfg: Any, choice: Optional["QEChoice"] = None) -> "RetrievalOptions":
        """Options of ``cfg.TEST``; with ``TEST.AQE.AUTO`` the post-processing is ``choice``'s (required then):
        its recorded ``POST_PROCESSING_FIELDS`` (DBA, expansion, re-ranking), or only its expansion for a
        choice recorded before DBA and re-ranking were candidates."""
        t = cfg.TEST
        options = cls(metric=t.METRIC, dba=bool(t.DBA.ENABLED), dba_k=int(t.DBA.K), dba_alpha=float(t.DBA.ALPHA),
                      qe_k=int(t.AQE.QE_K) if t.AQE.ENABLED else 0, qe_alpha=float(t.AQE.ALPHA),
                      qe_times=int(t.AQE.QE_TIME), qe_mode=t.AQE.MODE, rerank=bool(t.RERANK.ENABLED),
                      rerank_k1=int(t.RERANK.K1), rerank_k2=int(t.RERANK.K2), rerank_lambda=float(t.RERANK.LAMBDA),
                      backend=t.SEARCH.BACKEND, index=t.SEARCH.INDEX, nlist=int(t.SEARCH.NLIST),
                      nprobe=int(t.SEARCH.NPROBE), pq_m=int(t.SEARCH.PQ_M), refine=int(t.SEARCH.REFINE))
        if not t.AQE.AUTO:
            return options
        if choice is None:
            raise ValueError("TEST.AQE.AUTO: the post-processing is chosen on a labeled split; no choice was given")
        if choice.options:
            return options.replace(**choice.options)
        return options.replace(qe_k=int(choice.qe_k), qe_alpha=float(choice.alpha))

    def replace(self, **changes: Any) -> "RetrievalOptions":
        """A copy with ``changes`` (checked like a new object)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "RetrievalOptions":
        """Options written by :meth:`to_dict` (unknown keys are an error naming them)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown retrieval options {sorted(unknown)}")
        return cls(**values)


def prepare_gallery(gallery: torch.Tensor, options: RetrievalOptions) -> torch.Tensor:
    """The database after its query-independent step (DBA when enabled), float32 and un-normalised."""
    if options.dba:
        return dba(gallery, options.dba_k, options.dba_alpha, options.backend)
    return gallery.float()


def expand(query: torch.Tensor, gallery: torch.Tensor,
           options: RetrievalOptions) -> Tuple[torch.Tensor, torch.Tensor]:
    """Alpha query expansion of a prepared database as ``options`` say (unchanged when ``qe_k`` is 0)."""
    query, gallery = query.float(), gallery.float()
    if not options.expands:
        return query, gallery
    if options.qe_mode == "all":
        return aqe(query, gallery, options.qe_times, options.qe_k, options.qe_alpha, options.backend)
    return aqe_queries_only(query, gallery, options.qe_times, options.qe_k, options.qe_alpha, options.backend), gallery


def post_process(query: torch.Tensor, gallery: torch.Tensor, options: RetrievalOptions,
                 gallery_prepared: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """DBA -> query expansion -> L2 normalisation (cosine), on raw features.

    Args:
        query, gallery: ``Q x D`` and ``G x D`` features as extracted.
        options: the steps to run.
        gallery_prepared: the gallery already went through :func:`prepare_gallery` (a search index
            stores it so), so DBA is not applied again.
    Returns:
        (query, gallery) float32, ready for :func:`rank`.
    """
    if not gallery_prepared:
        gallery = prepare_gallery(gallery, options)
    query, gallery = expand(query, gallery, options)
    if options.metric == "cosine":
        query, gallery = normalize(query), normalize(gallery)
    return query, gallery


def search_depth(k: int, options: RetrievalOptions) -> int:
    """How many neighbours a search must return for a final top ``k`` (re-ranking re-orders more)."""
    return max(k, RERANK_CANDIDATES) if options.rerank else k


def rerank(query: torch.Tensor, gallery: torch.Tensor, candidates: np.ndarray,
           options: RetrievalOptions) -> Tuple[np.ndarray, np.ndarray]:
    """k-reciprocal re-ranking of each query's ``candidates``: (re-ordered items, scores = minus the distance)."""
    dist, order = k_reciprocal_rerank(query, gallery, candidates, options.rerank_k1, options.rerank_k2,
                                      options.rerank_lambda, options.metric)
    return order, -dist


def reranked_positive_ranks(ranks: np.ndarray, new_order: np.ndarray, relevant: np.ndarray,
                            excluded: Optional[np.ndarray] = None) -> np.ndarray:
    """Positive ranks after the top ``K`` of every ranking was re-ordered into ``new_order``.

    Args:
        ranks: ``Q x P`` original positive ranks (0 = padding).
        new_order: ``Q x K`` re-ordered candidates (the original top K).
        relevant: ``Q x K`` whether each re-ordered candidate is a positive.
        excluded: ``Q x K`` candidates outside the ranking (same id and camera), if any.
    Returns:
        ``Q x (P + K)`` ranks, 0 = padding: positives beyond rank K keep their rank.
    """
    k = new_order.shape[1]
    keep = np.where(ranks > k, ranks, 0)
    counted = np.ones_like(relevant, dtype=bool) if excluded is None else ~excluded
    position = np.cumsum(counted, axis=1)
    inside = np.where(relevant & counted, position, 0)
    return np.concatenate([keep, inside], axis=1)


def labeled_ranks(query: torch.Tensor, gallery: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                  options: RetrievalOptions, q_cam: Optional[np.ndarray] = None, g_cam: Optional[np.ndarray] = None,
                  topk: int = 0) -> Dict[str, np.ndarray]:
    """Exact positive ranks of post-processed features, after re-ranking when ``options`` say so.

    Like :func:`fastreid.evaluation.metrics.rank_positives_chunked` (``ranks``, ``num_pos``, with
    ``topk`` > 0 also ``topk_idx``/``topk_scores``); with re-ranking, the top ``search_depth(topk)`` of
    each query are re-ordered as :func:`rank` re-orders them and positives beyond keep their rank.
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    depth = min(search_depth(topk, options), gallery.shape[0]) if (topk or options.rerank) else 0
    res = rank_positives_chunked(query, gallery, q_pids, g_pids, q_cam, g_cam, options.metric, topk=depth)
    if options.rerank:
        top_idx, top_scores = rerank(query, gallery, res["topk_idx"], options)
        relevant = g_pids[top_idx] == q_pids[:, None]
        filt = q_cam is not None and g_cam is not None
        excluded = relevant & (np.asarray(g_cam)[top_idx] == np.asarray(q_cam)[:, None]) if filt else None
        res.update(ranks=reranked_positive_ranks(res["ranks"], top_idx, relevant, excluded), topk_idx=top_idx,
                   topk_scores=top_scores)
    return res


def rank(query: torch.Tensor, gallery: torch.Tensor, k: int, options: RetrievalOptions,
         structure: Optional[FaissIndex] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Top ``k`` database items of every query, best first: (scores, items), each ``Q x min(k, G)``.

    Args:
        query, gallery: post-processed features (see :func:`post_process`).
        k: results per query.
        options: search backend and structure, and re-ranking.
        structure: a faiss structure already built over ``gallery`` (a search index's); used when the
            backend resolves to faiss, otherwise the search is :func:`knn`'s.

    IVF-PQ's ``options.candidates`` x ``depth`` candidates are re-scored exactly on ``gallery`` (:func:`recheck`).
    """
    k = min(k, gallery.shape[0])
    depth = min(search_depth(k, options), gallery.shape[0])
    wide = min(depth * options.candidates, gallery.shape[0])
    if structure is not None and resolve_backend(options.backend, options.index) == "faiss":
        if structure.is_ivf:
            structure.nprobe = options.nprobe
        scores, idx = structure.search(query, wide)
    else:
        scores, idx = knn(query, gallery, wide, options.metric, options.backend, options.index, options.nlist,
                          options.nprobe, options.pq_m)
    if wide > depth:
        scores, idx = recheck(query, idx, lambda items: gallery[torch.from_numpy(items)], depth, options.metric)
    idx, scores = idx.numpy(), scores.numpy()
    if options.rerank:
        idx, scores = rerank(query, gallery, idx, options)
    return scores[:, :k], idx[:, :k]
