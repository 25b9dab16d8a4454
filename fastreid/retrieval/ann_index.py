"""The faiss structure of a search index: exact (``Flat``) or inverted file (``IVF``, ``IVF-PQ``).

Features are L2-normalised and searched by inner product, i.e. cosine similarity. IVF variants are
trained on a random sample of the features (seeded), then hold every feature; ``nprobe`` lists are
visited per query. Searching goes through :class:`fastreid.evaluation.search.FaissIndex`, so scores
and tie order are those of the evaluator's search.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np

from fastreid.evaluation.search import faiss

logger = logging.getLogger(__name__)

INDEX_TYPES = ("Flat", "IVF", "IVF-PQ")
# faiss wants about 39 training points per inverted list; fewer lists are used on small sets.
_POINTS_PER_LIST = 39


@dataclass
class AnnOptions:
    """How the faiss structure is built and searched.

    Args:
        index_type: ``Flat`` (exact), ``IVF`` (inverted lists of full vectors) or ``IVF-PQ``
            (inverted lists of product-quantised vectors, for millions of drawings).
        nlist: inverted lists (capped so that each gets ~39 training points).
        nprobe: lists visited per query (IVF types).
        pq_m: sub-quantisers of IVF-PQ (8 bits each); 0 = dim / 8. Must divide the dimension.
        train_size: features sampled to train IVF types; 0 = max(100000, 39 * nlist).
        seed: seed of the training sample.
    """

    index_type: str = "Flat"
    nlist: int = 1024
    nprobe: int = 32
    pq_m: int = 0
    train_size: int = 0
    seed: int = 0

    def check(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"--index-type must be one of {INDEX_TYPES}, got {self.index_type!r}")
        if self.nlist < 1 or self.nprobe < 1:
            raise ValueError(f"nlist and nprobe must be >= 1, got {self.nlist}, {self.nprobe}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def factory_string(options: AnnOptions, count: int, dim: int) -> str:
    """The ``faiss.index_factory`` description of the structure for ``count`` features of ``dim``."""
    if options.index_type == "Flat":
        return "Flat"
    nlist = max(1, min(options.nlist, count // _POINTS_PER_LIST))
    if options.index_type == "IVF":
        return f"IVF{nlist},Flat"
    m = options.pq_m or max(1, dim // 8)
    if dim % m:
        raise ValueError(f"--pq-m {m} must divide the feature dimension {dim}")
    return f"IVF{nlist},PQ{m}"


def build_ann(normed: np.ndarray, options: AnnOptions) -> "faiss.Index":
    """A trained faiss index holding every row of ``normed`` (float32, L2-normalised, ``N x D``)."""
    if faiss is None:
        raise ImportError("the search index needs faiss: pip install faiss-cpu")
    options.check()
    count, dim = normed.shape
    desc = factory_string(options, count, dim)
    index = faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT)
    if hasattr(index, "do_polysemous_training"):
        # The factory turns it on, but it only serves Hamming filtering (unused here) and costs ~15x the training.
        index.do_polysemous_training = False
    if not index.is_trained:
        size = options.train_size or max(100_000, _POINTS_PER_LIST * index.nlist)
        rng = np.random.default_rng(options.seed)
        sample = normed if size >= count else normed[np.sort(rng.choice(count, size, replace=False))]
        logger.info("Training faiss %s on %d of %d features", desc, len(sample), count)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, count, 100_000):
        index.add(np.ascontiguousarray(normed[start:start + 100_000], dtype=np.float32))
    if hasattr(index, "nprobe"):
        index.nprobe = options.nprobe
    return index
