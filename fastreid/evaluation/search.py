"""Exact and approximate k-nearest-neighbour search over feature matrices.

Every function here works on *similarity scores* (higher is better):

- ``"cosine"``: inner product of L2-normalised rows (the caller normalises, see :func:`normalize`);
- ``"euclidean"``: minus the squared L2 distance, so that ordering by descending score is ordering by
  ascending distance.

Ties are broken as a stable sort by index: of two items with equal score the lower index ranks
higher. The torch path guarantees this everywhere; faiss paths re-sort each returned list, so ties
that straddle the k-th position follow faiss (only exact duplicates of a float can tie).
"""
from __future__ import annotations

import importlib
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from fastreid.utils.compute_dist import METRICS, check_metric, pairwise_scores

logger = logging.getLogger(__name__)

# Bytes of score matrix computed at a time by chunked code (queries x database chunk).
DEFAULT_CHUNK_BYTES = 256 * 2 ** 20

try:  # faiss is optional: the torch path covers every feature.
    import faiss  # type: ignore
except ImportError:  # pragma: no cover - exercised only where faiss is missing
    faiss = None


def default_device() -> str:
    """Where chunked torch code scores: the GPU when CUDA is available, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    return F.normalize(x.float(), p=2, dim=1)


def rows_per_chunk(num_columns: int, bytes_per_cell: int = 32, budget: int = DEFAULT_CHUNK_BYTES) -> int:
    """How many query rows fit a memory budget when each row has ``num_columns`` cells."""
    return max(1, budget // max(1, num_columns * bytes_per_cell))


def _resort(scores: torch.Tensor, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Order each row by (score desc, index asc); faiss leaves ties in heap order."""
    order = torch.argsort(idx, dim=1)
    idx, scores = idx.gather(1, order), scores.gather(1, order)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, order), idx.gather(1, order)


def topk_stable(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of every row by descending score, ties by ascending index.

    ``torch.topk`` does not order ties. One extra value per row tells whether the k-th score also
    occurs outside the selection: only such rows are redone with a stable full sort; the others
    just have their k entries re-sorted.
    """
    num = scores.shape[1]
    k = min(k, num)
    vals, idx = torch.topk(scores, min(k + 1, num), dim=1)
    ambiguous = torch.zeros(len(vals), dtype=torch.bool, device=scores.device)
    if k < num:
        if k > 0:
            ambiguous = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k], idx[:, :k]
    vals, idx = _resort(vals, idx)
    for r in torch.nonzero(ambiguous).flatten().tolist():
        s = torch.sort(scores[r], descending=True, stable=True)
        vals[r], idx[r] = s.values[:k], s.indices[:k]
    return vals, idx


def merge_topk(parts: Sequence[Tuple[torch.Tensor, torch.Tensor]], k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of the union of several ``(scores, indices)`` lists per row, by descending score and
    ascending index.

    Exact when each part holds the top of its own disjoint set of items in that order (as
    :func:`topk_stable` returns them, indices made global): the union then holds the overall top ``k``.
    Missing results (index ``-1``) sort last.
    """
    scores = torch.cat([s.float() for s, _ in parts], dim=1)
    idx = torch.cat([i.long() for _, i in parts], dim=1)
    scores = torch.where(idx >= 0, scores, torch.full_like(scores, float("-inf")))
    scores, idx = _resort(scores, idx)
    return scores[:, :k], idx[:, :k]


def torch_knn(query: torch.Tensor, database: torch.Tensor, k: int, metric: str = "cosine",
              chunk_bytes: int = DEFAULT_CHUNK_BYTES,
              device: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN in query chunks on ``device`` (default: CUDA if available); no ``Q x M`` matrix is held.

    Returns:
        (scores, indices), each ``Q x k`` on the CPU, best first; indices are int64 rows of ``database``.
    """
    dev = torch.device(device or default_device())
    k = min(k, database.shape[0])
    out_s = torch.empty(query.shape[0], k, dtype=torch.float32)
    out_i = torch.empty(query.shape[0], k, dtype=torch.int64)
    step = rows_per_chunk(database.shape[0], 8, chunk_bytes)
    db = database.to(dev, torch.float32)
    for s in range(0, query.shape[0], step):
        sims = pairwise_scores(query[s:s + step].to(dev), db, metric)
        vals, idx = topk_stable(sims, k)
        out_s[s:s + step], out_i[s:s + step] = vals.cpu(), idx.cpu()
    return out_s, out_i


def _faiss_gpu_ready() -> bool:
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 \
        and torch.cuda.is_available()


def _ivf(index: "faiss.Index") -> "faiss.Index":
    """The inverted-file part of a faiss index (the index itself for plain IVF, CPU or GPU)."""
    return index if hasattr(index, "nprobe") else faiss.extract_index_ivf(index)


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


# The faiss structures, one spelling everywhere (TEST.SEARCH.INDEX, build_index --index-type, manifests):
# "flat" (exact), "ivf" (inverted lists of full vectors), "ivf-pq" (inverted lists of 8-bit product codes).
INDEX_TYPES = ("flat", "ivf", "ivf-pq")
# faiss wants about 39 training points per inverted list; fewer lists are used on small sets.
POINTS_PER_LIST = 39


def check_index_type(index_type: str) -> str:
    """Return ``index_type`` or raise naming the config key and option that select it."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"TEST.SEARCH.INDEX / --index-type must be one of {INDEX_TYPES}, got {index_type!r}")
    return index_type


def factory_string(index_type: str, count: int, dim: int, nlist: int = 1024, pq_m: int = 0) -> str:
    """The ``faiss.index_factory`` description of a structure over ``count`` features of ``dim``.

    Inverted lists are capped at ``count // 39`` so each gets enough training points; IVF-PQ uses
    ``pq_m`` sub-quantisers of 8 bits (0: ``dim // 8``), which must divide ``dim``.
    """
    check_index_type(index_type)
    if index_type == "flat":
        return "Flat"
    nlist = max(1, min(nlist, count // POINTS_PER_LIST))
    if index_type == "ivf":
        return f"IVF{nlist},Flat"
    m = pq_m or max(1, dim // 8)
    if dim % m:
        raise ValueError(f"--pq-m {m} must divide the feature dimension {dim}")
    return f"IVF{nlist},PQ{m}"


class FaissIndex:
    """The one factory of faiss structures (:data:`INDEX_TYPES`), used by the evaluator and the search index.

    IVF types are trained on a seeded sample of ``train_size`` rows (0: ``max(100000, 39 x nlist)``,
    all rows when fewer). On GPU (faiss built with GPU support and CUDA present) torch tensors are
    passed straight to faiss through ``faiss.contrib.torch_utils``; the GPU resources live as long
    as the index. ``nprobe`` can be changed between searches; ``wrap`` searches a structure read back
    from disk. ``index`` is the faiss object (``faiss.write_index`` stores a CPU one).
    """

    def __init__(self, database: torch.Tensor, metric: str = "cosine", index_type: str = "flat",
                 nlist: int = 1024, nprobe: int = 32, use_gpu: Optional[bool] = None, pq_m: int = 0,
                 train_size: int = 0, seed: int = 0) -> None:
        if faiss is None:
            raise RuntimeError("faiss is not installed (pip install faiss-cpu); TEST.SEARCH.BACKEND 'torch' "
                               "searches exactly without it")
        self.metric = check_metric(metric)
        self.size, dim = database.shape
        self.gpu = _faiss_gpu_ready() if use_gpu is None else use_gpu
        desc = factory_string(index_type, self.size, dim, nlist, pq_m)
        index = faiss.index_factory(dim, desc, _faiss_metric(metric))
        if hasattr(index, "do_polysemous_training"):
            # The factory turns it on, but it only serves Hamming filtering (unused here) and costs ~15x the training.
            index.do_polysemous_training = False
        if self.gpu:
            importlib.import_module("faiss.contrib.torch_utils")  # lets faiss take torch tensors
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), index)
        if not index.is_trained:
            size = train_size or max(100_000, POINTS_PER_LIST * _ivf(index).nlist)
            sample = database
            if size < self.size:
                rows = np.sort(np.random.default_rng(seed).choice(self.size, size, replace=False))
                sample = database[torch.from_numpy(rows)]
            logger.info("Training faiss %s on %d of %d features", desc, len(sample), self.size)
            index.train(self._prepare(sample))
        for start in range(0, self.size, 100_000):
            index.add(self._prepare(database[start:start + 100_000]))
        self.index = index
        self.is_ivf = index_type != "flat"
        if self.is_ivf:
            self.nprobe = nprobe

    def description(self) -> str:
        """A short description of the structure (its class and sizes), for logs and manifests."""
        parts = [type(self.index).__name__]
        if hasattr(self.index, "nlist"):
            parts.append(f"nlist={self.index.nlist}")
        if hasattr(self.index, "pq"):
            parts.append(f"pq_m={self.index.pq.M}")
        return " ".join(parts)

    @classmethod
    def wrap(cls, index: "faiss.Index", metric: str = "cosine") -> "FaissIndex":
        """Search an existing CPU faiss index (built elsewhere, e.g. read back with ``faiss.read_index``)
        through this class: same score convention and tie order as an index built here."""
        self = cls.__new__(cls)
        self.metric = check_metric(metric)
        self.size, self.gpu, self.index = int(index.ntotal), False, index
        self.is_ivf = not isinstance(index, faiss.IndexFlat)
        return self

    @property
    def nprobe(self) -> int:
        return int(_ivf(self.index).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        _ivf(self.index).nprobe = value

    def _prepare(self, x: torch.Tensor):
        if self.gpu:
            return x.float().cuda().contiguous()
        return np.ascontiguousarray(x.float().numpy())

    def search(self, query: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) ``Q x k`` on the CPU, best first, module score convention."""
        dist, idx = self.index.search(self._prepare(query), min(k, self.size))
        dist, idx = torch.as_tensor(dist).cpu().float(), torch.as_tensor(idx).cpu().long()
        return _resort(dist if self.metric == "cosine" else -dist, idx)


def faiss_knn(query: torch.Tensor, database: torch.Tensor, k: int, metric: str = "cosine",
              index_type: str = "flat", nlist: int = 1024, nprobe: int = 32,
              use_gpu: Optional[bool] = None, pq_m: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """k-NN with a one-off :class:`FaissIndex` (scores: euclidean is minus the squared distance)."""
    return FaissIndex(database, metric, index_type, nlist, nprobe, use_gpu, pq_m).search(query, k)


BACKENDS = ("auto", "faiss", "torch")


def resolve_backend(backend: str, index_type: str = "flat") -> str:
    """``TEST.SEARCH.BACKEND`` "auto": faiss for an approximate index (only faiss has one) when installed, else
    the chunked torch search, on CUDA and on CPU alike: on the 2-core development machine it was as
    fast as faiss-cpu or faster (``benchmarks/eval_scale.py``, docs/evaluation.md). faiss on the GPU
    is used when ``faiss`` is asked for and faiss has GPU support."""
    if backend not in BACKENDS:
        raise ValueError(f"TEST.SEARCH.BACKEND must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "faiss" if index_type != "flat" and faiss is not None else "torch"


def knn(query: torch.Tensor, database: torch.Tensor, k: int, metric: str = "cosine", backend: str = "auto",
        index_type: str = "flat", nlist: int = 1024, nprobe: int = 32,
        pq_m: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on ``TEST.SEARCH.BACKEND`` (see :func:`resolve_backend`); "faiss" falls back to torch
    (with a warning) when missing."""
    check_index_type(index_type)
    backend = resolve_backend(backend, index_type)
    if backend == "faiss" and faiss is None:
        logger.warning("faiss is not installed: TEST.SEARCH.BACKEND falls back to 'torch' (exact)")
        backend = "torch"
    if backend == "torch":
        if index_type != "flat":
            logger.warning("TEST.SEARCH.INDEX=%r needs faiss; the torch backend searches exactly", index_type)
        return torch_knn(query, database, k, metric)
    return faiss_knn(query, database, k, metric, index_type, nlist, nprobe, pq_m=pq_m)


def recall_against_exact(approx_idx: torch.Tensor, exact_idx: torch.Tensor) -> float:
    """Fraction of the exact top-k neighbours that an approximate search also returned (recall@k)."""
    if exact_idx.numel() == 0:
        return 1.0
    hits = (approx_idx[:, :, None] == exact_idx[:, None, :]).any(1).sum().item()
    return hits / exact_idx.numel()
