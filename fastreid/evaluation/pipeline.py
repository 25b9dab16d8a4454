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

from .query_expansion import aqe, aqe_queries_only, dba
from .rerank import k_reciprocal_rerank
from fastreid.config.checks import choice_problem

from .search import BACKENDS, INDEX_TYPES, METRICS, FaissIndex, knn, normalize, resolve_backend

if TYPE_CHECKING:  # pragma: no cover
    from .qe_tuning import QEChoice

# TEST.AQE.MODE: "all" expands queries and database together (the reference; the database then
# depends on the query set), "query" expands each query against the database alone.
QE_MODES = ("all", "query")
# Candidates per query that k-reciprocal re-ranking re-orders (ranks beyond keep their place).
RERANK_CANDIDATES = 100


@dataclass(frozen=True)
class RetrievalOptions:
    """Every choice between features and a ranked list (docs/evaluation.md, "Pipeline").

    ``qe_k`` 0 means no query expansion (``k`` counts the item itself); ``dba`` and ``rerank`` switch
    their steps; ``backend``/``index``/``nlist``/``nprobe``/``pq_m`` choose the search
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
        if self.nlist < 1 or self.nprobe < 1:
            raise ValueError(f"TEST.SEARCH.NLIST and NPROBE must be >= 1, got {self.nlist}, {self.nprobe}")

    @property
    def expands(self) -> bool:
        """Whether query expansion runs."""
        return self.qe_k > 0

    @property
    def changes_gallery(self) -> bool:
        """Whether post-processing rewrites the database per query set (expansion in mode ``all``), so a
        structure built over the stored database no longer applies."""
        return self.expands and self.qe_mode == "all"

    @classmethod
    def from_config(cls, cfg: Any, choice: Optional["QEChoice"] = None) -> "RetrievalOptions":
        """Options of ``cfg.TEST``; with ``TEST.AQE.AUTO`` the expansion is ``choice``'s (required then)."""
        t = cfg.TEST
        qe_k = int(t.AQE.QE_K) if t.AQE.ENABLED else 0
        qe_alpha = float(t.AQE.ALPHA)
        if t.AQE.AUTO:
            if choice is None:
                raise ValueError("TEST.AQE.AUTO: the expansion is chosen on a labeled split; no choice was given")
            qe_k, qe_alpha = int(choice.qe_k), float(choice.alpha)
        return cls(metric=t.METRIC, dba=bool(t.DBA.ENABLED), dba_k=int(t.DBA.K), dba_alpha=float(t.DBA.ALPHA),
                   qe_k=qe_k, qe_alpha=qe_alpha, qe_times=int(t.AQE.QE_TIME), qe_mode=t.AQE.MODE,
                   rerank=bool(t.RERANK.ENABLED), rerank_k1=int(t.RERANK.K1), rerank_k2=int(t.RERANK.K2),
                   rerank_lambda=float(t.RERANK.LAMBDA), backend=t.SEARCH.BACKEND, index=t.SEARCH.INDEX,
                   nlist=int(t.SEARCH.NLIST), nprobe=int(t.SEARCH.NPROBE), pq_m=int(t.SEARCH.PQ_M))

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


def rank(query: torch.Tensor, gallery: torch.Tensor, k: int, options: RetrievalOptions,
         structure: Optional[FaissIndex] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Top ``k`` database items of every query, best first: (scores, items), each ``Q x min(k, G)``.

    Args:
        query, gallery: post-processed features (see :func:`post_process`).
        k: results per query.
        options: search backend and structure, and re-ranking.
        structure: a faiss structure already built over ``gallery`` (a search index's); used when the
            backend resolves to faiss, otherwise the search is :func:`knn`'s.
    """
    k = min(k, gallery.shape[0])
    depth = min(search_depth(k, options), gallery.shape[0])
    if structure is not None and resolve_backend(options.backend, options.index) == "faiss":
        if structure.is_ivf:
            structure.nprobe = options.nprobe
        scores, idx = structure.search(query, depth)
    else:
        scores, idx = knn(query, gallery, depth, options.metric, options.backend, options.index, options.nlist,
                          options.nprobe, options.pq_m)
    idx, scores = idx.numpy(), scores.numpy()
    if options.rerank:
        idx, scores = rerank(query, gallery, idx, options)
    return scores[:, :k], idx[:, :k]
