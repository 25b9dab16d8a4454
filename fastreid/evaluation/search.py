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
from typing import Callable, Optional, Sequence, Tuple

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


def auto_nlist(count: int) -> int:
    """Inverted lists for ``count`` features: the largest power of two up to ``4 sqrt(count)`` (faiss' guideline
    is 4 to 16 sqrt(N); the low end keeps training short), at most ``count // 39``, at least 1."""
    target = max(1, min(4 * count ** 0.5, count // POINTS_PER_LIST))
    return 1 << int(np.floor(np.log2(target)))


# --index-type auto (tools/build_index.py), from the measured table in docs/search.md: exact search up to
# AUTO_EXACT_MAX features (about 3.5 us per stored feature and query there); IVF (full vectors) while its file,
# count x dim x 4 bytes, stays under AUTO_IVF_MAX_BYTES (building holds about twice that); IVF-PQ (64 bytes per
# 512-d feature, candidates re-scored exactly) beyond. Probing AUTO_PROBE_FRACTION of the lists reached
# recall@10 >= 0.95 on the benchmark's 2.7 M features.
AUTO_EXACT_MAX = 50_000
AUTO_IVF_MAX_BYTES = 2 * 2 ** 30
AUTO_PROBE_FRACTION = 1 / 16


def auto_structure(count: int, dim: int, ivf_max_bytes: int = AUTO_IVF_MAX_BYTES) -> Tuple[str, int, int]:
    """(index type, nlist, nprobe) for ``count`` features of ``dim`` (:data:`AUTO_EXACT_MAX`, :func:`auto_nlist`)."""
    nlist = auto_nlist(count)
    nprobe = max(1, int(nlist * AUTO_PROBE_FRACTION))
    if count <= AUTO_EXACT_MAX:
        return "flat", nlist, nprobe
    return ("ivf" if count * dim * 4 <= ivf_max_bytes else "ivf-pq"), nlist, nprobe


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
        self._create(database.shape[0], database.shape[1], metric, index_type, nlist, nprobe, use_gpu, pq_m)
        if not self.index.is_trained:
            rows = self.training_rows(train_size, seed)
            self.train(database if rows is None else database[torch.from_numpy(rows)])
        for start in range(0, self.count, 100_000):
            self.add(database[start:start + 100_000])

    @classmethod
    def empty(cls, count: int, dim: int, metric: str = "cosine", index_type: str = "flat", nlist: int = 1024,
              nprobe: int = 32, use_gpu: Optional[bool] = None, pq_m: int = 0) -> "FaissIndex":
        """The untrained, empty structure that :meth:`__init__` would build over ``count`` features: train it
        with :meth:`train` on the rows of :meth:`training_rows` and fill it with :meth:`add` part by part
        (a search index's build, which never holds all features at once); same result."""
        self = cls.__new__(cls)
        self._create(count, dim, metric, index_type, nlist, nprobe, use_gpu, pq_m)
        return self

    def _create(self, count: int, dim: int, metric: str, index_type: str, nlist: int, nprobe: int,
                use_gpu: Optional[bool], pq_m: int) -> None:
        if faiss is None:
            raise RuntimeError("faiss is not installed (pip install faiss-cpu); TEST.SEARCH.BACKEND 'torch' "
                               "searches exactly without it")
        self.metric = check_metric(metric)
        self.count = count
        self.gpu = _faiss_gpu_ready() if use_gpu is None else use_gpu
        self.factory = factory_string(index_type, count, dim, nlist, pq_m)
        index = faiss.index_factory(dim, self.factory, _faiss_metric(metric))
        if hasattr(index, "do_polysemous_training"):
            # The factory turns it on, but it only serves Hamming filtering (unused here) and costs ~15x the training.
            index.do_polysemous_training = False
        if self.gpu:
            importlib.import_module("faiss.contrib.torch_utils")  # lets faiss take torch tensors
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), index)
        self.index = index
        self.is_ivf = index_type != "flat"
        if self.is_ivf:
            self.nprobe = nprobe

    def training_rows(self, train_size: int = 0, seed: int = 0) -> Optional[np.ndarray]:
        """Sorted rows of the seeded training sample of ``train_size`` of the ``count`` features
        (0: ``max(100000, 39 x nlist)``); None when that is all of them."""
        size = train_size or max(100_000, POINTS_PER_LIST * _ivf(self.index).nlist)
        if size >= self.count:
            return None
        return np.sort(np.random.default_rng(seed).choice(self.count, size, replace=False))

    def train(self, sample: torch.Tensor) -> None:
        """Train the coarse quantizer (and PQ codebooks) on ``sample`` (the rows of :meth:`training_rows`)."""
        logger.info("Training faiss %s on %d of %d features", self.factory, len(sample), self.count)
        self.index.train(self._prepare(sample))

    def add(self, rows: torch.Tensor, first_id: Optional[int] = None) -> None:
        """Add ``rows``, numbered from ``first_id`` (IVF types; default: after the rows already added), so one
        process can fill the part of the collection that starts at ``first_id``."""
        if first_id is None or first_id == self.size:
            self.index.add(self._prepare(rows))
        elif not self.is_ivf:
            raise ValueError("a flat structure numbers its rows in order: add them in order")
        else:
            self.index.add_with_ids(self._prepare(rows), np.arange(first_id, first_id + len(rows), dtype=np.int64))

    def merge(self, part: "faiss.Index") -> None:
        """Append every inverted list of ``part`` (the same trained IVF structure filled with other rows, e.g.
        another process's, read memory-mapped) to this one's; ``part`` is left as it is. Row numbers are kept,
        so parts merged in the order of their rows equal one structure filled in that order."""
        own, other = _ivf(self.index), _ivf(part)
        if not self.is_ivf or own.nlist != other.nlist or own.code_size != other.code_size:
            raise ValueError(f"only the same IVF structure merges: {self.description()} and {type(part).__name__}")
        lists, theirs = own.invlists, other.invlists
        for number in range(other.nlist):
            entries = theirs.list_size(number)
            if entries:
                lists.add_entries(number, entries, theirs.get_ids(number), theirs.get_codes(number))
        own.ntotal += other.ntotal

    @classmethod
    def read(cls, path: str, metric: str = "cosine", mmap: bool = True) -> "FaissIndex":
        """A structure written by ``faiss.write_index``; with ``mmap`` the inverted lists of an IVF type stay in
        the file, memory-mapped read-only (the operating system pages in the lists that queries visit)."""
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        return cls.wrap(faiss.read_index(path, flags), metric)

    @property
    def size(self) -> int:
        """Rows in the structure."""
        return int(self.index.ntotal)

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
        self.count, self.gpu, self.index = int(index.ntotal), False, index
        self.factory = type(index).__name__
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


def recheck(query: torch.Tensor, candidates: torch.Tensor, rows: Callable[[np.ndarray], torch.Tensor], k: int,
            metric: str = "cosine") -> Tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of each query's ``candidates`` (``Q x R`` items, ``-1``: none) re-scored exactly.

    ``rows(items)`` returns the features of the sorted unique ``items`` (as searched: normalised for cosine),
    so only the candidates' rows are read (a search index reads them from its stored shards). Ties by item.
    """
    ids = candidates.numpy()
    valid = ids >= 0
    wanted, position = np.unique(ids[valid], return_inverse=True)
    table = rows(wanted).float()
    scores = torch.full(ids.shape, float("-inf"))
    owner = torch.from_numpy(np.nonzero(valid)[0])
    picked = table[torch.from_numpy(position.reshape(-1))]
    if metric == "cosine":
        scores[torch.from_numpy(valid)] = (picked * query.float()[owner]).sum(1)
    else:
        scores[torch.from_numpy(valid)] = -((picked - query.float()[owner]) ** 2).sum(1)
    return merge_topk([(scores, candidates)], k)


def recall_against_exact(approx_idx: torch.Tensor, exact_idx: torch.Tensor) -> float:
    """Fraction of the exact top-k neighbours that an approximate search also returned (recall@k)."""
    if exact_idx.numel() == 0:
        return 1.0
    hits = (approx_idx[:, :, None] == exact_idx[:, None, :]).any(1).sum().item()
    return hits / exact_idx.numel()
