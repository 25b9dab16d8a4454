"""``Index``: a persistent collection of drawing features that answers nearest-patent queries.

Built by :mod:`.build` (shards, structure, manifest). Search: embed the queries with the index's own
model (checked by fingerprint), then the evaluator's pipeline (``fastreid.evaluation.pipeline.post_process``
and ``rank``) with the recorded options, so an index answers as the evaluator ranks; searches that do not
need every feature read only what they use from disk (:mod:`.structure`). This class only stores
features and wires those functions.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fastreid.data.preprocess import ImageLike
from fastreid.evaluation import normalize
from fastreid.evaluation.pipeline import RetrievalOptions, post_process, rank
from fastreid.evaluation.search import FaissIndex, recheck, resolve_backend
from fastreid.utils import comm

from . import store
from .build import BuildOptions, run_build
from .extractor import Extractor, check_fingerprint, load_recorded_extractor
from .items import Items, drop_duplicates
from .structure import StoredFeatures, exact_search, expand_queries

logger = logging.getLogger(__name__)


@dataclass
class SearchHit:
    """One answer: ``rank`` from 1, ``item`` the row in the index, its path as given at build, patent id, score
    (cosine similarity after the index's post-processing)."""

    rank: int
    item: int
    path: str
    patent: str
    score: float


class Index:
    """A search index on disk (see :mod:`fastreid.retrieval.store` for the layout).

    Use :meth:`build` or :meth:`open`; ``len(index)``, ``index.paths[i]``, ``index.patents[i]``,
    :meth:`items_of_patent`, :meth:`embed`, :meth:`search`, :meth:`add`.
    """

    def __init__(self, root: str, extractor: Optional[Extractor] = None, load_extractor: bool = True) -> None:
        self.root = root
        self.manifest = store.read_manifest(root)
        self.paths: List[str] = []
        self.patents: List[str] = []
        self._shards: List[np.ndarray] = []
        self._cwds: List[str] = []
        for i in range(len(self.manifest["shards"])):
            items = store.read_shard_items(root, i)
            self.paths += items["paths"]
            self.patents += items["patents"]
            self._cwds += [items["cwd"]] * len(items["paths"])
            self._shards.append(store.open_shard(root, i))
        if len(self.paths) != self.manifest["count"]:
            raise ValueError(f"{root}: the shards hold {len(self.paths)} drawings, the manifest says "
                             f"{self.manifest['count']}")
        self._by_patent: Optional[Dict[str, List[int]]] = None
        self._prepared: Optional[torch.Tensor] = None
        self._structure: Optional[FaissIndex] = None
        self._stored: Optional[StoredFeatures] = None
        self.options = RetrievalOptions.from_dict(self.manifest["retrieval"])
        self.extractor = extractor
        if extractor is None and load_extractor:
            self.extractor = load_recorded_extractor(self.manifest["extractor"], os.path.join(root, store.CONFIG))
        if self.extractor is not None:
            entry = self.manifest["extractor"]
            own = "" if extractor is not None else entry.get("onnx" if entry["kind"] == "onnx" else "weights", "")
            check_fingerprint(self.manifest["fingerprint"], self.extractor.fingerprint, root, own_model=own)

    @classmethod
    def open(cls, root: str, extractor: Optional[Extractor] = None, load_extractor: bool = True) -> "Index":
        """Open the index in ``root`` with its own model, or with ``extractor`` if its fingerprint matches."""
        return cls(root, extractor, load_extractor)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def file(self, item: int) -> str:
        """Item ``item``'s file, made absolute against the working folder of the build that added it."""
        return os.path.join(self._cwds[item], self.paths[item])

    def items_of_patent(self, patent: str) -> List[int]:
        """Rows of every drawing of ``patent`` in index order; ``KeyError`` for an unknown patent (``""``, the
        drawings of unknown patent, included)."""
        if self._by_patent is None:
            # Built aside and published in one assignment: concurrent callers never see half a table.
            table: Dict[str, List[int]] = {}
            for i, pid in enumerate(self.patents):
                if pid:
                    table.setdefault(pid, []).append(i)
            self._by_patent = table
        return list(self._by_patent[patent])

    def relative_path(self, item: int) -> str:
        """Item ``item``'s file relative to the index folder (what the search page shows)."""
        return os.path.relpath(self.file(item), self.root)

    def features(self, post_processed: bool = True) -> torch.Tensor:
        """All stored features as float32 ``N x D`` (after DBA when the index applied it and ``post_processed``)."""
        if post_processed and self.manifest["dba"]["enabled"]:
            return torch.from_numpy(np.load(os.path.join(self.root, store.DBA_FILE)).astype(np.float32))
        return torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float32) for s in self._shards]))

    def query_features(self, queries: Union[torch.Tensor, Sequence[ImageLike]]) -> torch.Tensor:
        """Raw float32 features of query images with the index's model (a feature tensor is checked and kept)."""
        if isinstance(queries, torch.Tensor):
            if queries.ndim != 2 or queries.shape[1] != self.dim:
                raise ValueError(f"query features must be (n, {self.dim}), got {tuple(queries.shape)}")
            return queries.float()
        if self.extractor is None:
            raise RuntimeError(f"{self.root} was opened without its model: pass features, or open with the model")
        return self.extractor(list(queries)).float()

    def embed(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """L2-normalised float32 features (``n x D``) of file paths or PIL images, with the index's model."""
        return normalize(self.query_features(images))

    def _gallery(self) -> torch.Tensor:
        """The prepared database (after DBA when recorded) in memory, read once: only for the steps that need all
        of it (query expansion in mode ``all``, k-reciprocal re-ranking)."""
        if self._prepared is None:
            self._prepared = self.features()
        return self._prepared

    def stored(self) -> StoredFeatures:
        """The prepared database as it lies on disk, memory-mapped (``dba.npy`` with DBA, else the shards)."""
        if self._stored is None:
            dba = self.manifest["dba"]["enabled"]
            self._stored = StoredFeatures.of_index(self.root, len(self._shards), True) if dba \
                else StoredFeatures(self._shards)
        return self._stored

    def structure(self) -> FaissIndex:
        """The stored IVF structure over the normalised prepared database, read once, memory-mapped read-only:
        its inverted lists stay in the file and the lists that queries visit are paged in."""
        if self._structure is None:
            self._structure = FaissIndex.read(os.path.join(self.root, store.FAISS_FILE), "cosine", mmap=True)
        return self._structure

    def search_options(self, qe: Optional[bool] = None, nprobe: Optional[int] = None) -> RetrievalOptions:
        """The recorded options; ``qe=False`` drops the recorded expansion (``True`` asks for it: an error when the
        index records none), ``nprobe`` overrides IVF probes."""
        options = self.options
        if qe and not options.expands:
            raise ValueError(f"{self.root} records no query expansion; build it with --qe K ALPHA (or TEST.AQE.*)")
        if qe is False:
            options = options.replace(qe_k=0)
        if nprobe is not None:
            options = options.replace(nprobe=nprobe)
        return options

    def search_features(self, query: torch.Tensor, k: int = 10, qe: Optional[bool] = None,
                        nprobe: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, items), each ``n x min(k, N)``, best first, for raw query features.

        The queries go through the evaluator's pipeline with the recorded options. With an expansion
        in mode ``all`` the database is expanded together with these queries (as the evaluator does for
        its whole query set), so the answer depends on the set of queries searched together.
        """
        options = self.search_options(qe, nprobe)
        if options.depends_on_query_set:
            query, gallery = post_process(query, self._gallery(), options, gallery_prepared=True)
            structure = None
            if options.index != "flat" and not options.changes_gallery:
                structure = self.structure()
            return rank(query, gallery, k, options, structure)
        # Every other search reads from disk only what it needs: the visited lists of an IVF structure, or
        # one shard at a time for an exact search; query-only expansion reads its neighbours' rows.
        if options.expands:
            query = expand_queries(query, self.stored(), options.qe_k, options.qe_alpha, options.qe_times,
                                   options.backend)
        query = normalize(query)
        if options.index != "flat" and resolve_backend(options.backend, options.index) == "faiss":
            structure = self.structure()
            structure.nprobe = options.nprobe
            scores, idx = structure.search(query, min(k * options.candidates, len(self)))
            if options.candidates > 1:  # IVF-PQ: the candidates re-scored on the stored features
                scores, idx = recheck(query, idx, lambda items: normalize(self.stored().rows(items)), k)
        else:
            scores, idx = exact_search(query, self.stored(), k, options.backend)
        return scores.numpy(), idx.numpy()

    def search(self, queries: Union[torch.Tensor, Sequence[ImageLike]], k: int = 10, qe: Optional[bool] = None,
               nprobe: Optional[int] = None) -> List[List[SearchHit]]:
        """Top-``k`` of every query (paths / PIL images, or an ``n x D`` feature tensor taken as given);
        ``qe=False`` searches without the index's recorded query expansion."""
        scores, idx = self.search_features(self.query_features(queries), k, qe, nprobe)
        return [[SearchHit(r + 1, int(i), self.paths[int(i)], self.patents[int(i)], float(s))
                 for r, (i, s) in enumerate(zip(row_i, row_s)) if i >= 0] for row_i, row_s in zip(idx, scores)]

    def search_in_batches(self, queries: Sequence[ImageLike], k: int = 10, batch_size: int = 1,
                          qe: Optional[bool] = None,
                          nprobe: Optional[int] = None) -> Tuple[List[List[SearchHit]], List[float]]:
        """:meth:`search` of ``batch_size`` queries at a time, logging each batch's latency; returns the hits
        and every query's latency in ms.

        With an expansion in mode ``all`` (the evaluator's reference mode) the indexed features are
        expanded together with the queries, and k-reciprocal re-ranking builds its neighbour graph over the
        queries and the indexed drawings, so the answers depend on the whole query set: the queries are
        then embedded batch by batch (the latency is the embedding's) and searched as one set.
        """
        together = self.search_options(qe, nprobe).depends_on_query_set
        if together:
            logger.info("The index's post-processing (%s) depends on the whole query set: the %d queries are "
                        "searched as one set", self.search_options(qe, nprobe).describe(), len(queries))
        hits: List[List[SearchHit]] = []
        feats: List[torch.Tensor] = []
        latency: List[float] = []
        for s in range(0, len(queries), batch_size):
            batch = list(queries[s:s + batch_size])
            start = time.perf_counter()
            if together:
                feats.append(self.query_features(batch))
            else:
                hits += self.search(batch, k, qe, nprobe)
            ms = 1000 * (time.perf_counter() - start) / len(batch)
            latency += [ms] * len(batch)
            logger.info("query %d%s: %.1f ms per query (%s)", s, f"-{s + len(batch) - 1}" if len(batch) > 1 else "",
                        ms, "embedding" if together else "embedding + search")
        if together and feats:
            start = time.perf_counter()
            hits = self.search(torch.cat(feats), k, qe, nprobe)
            logger.info("Searched the %d queries together in %.1f s", len(queries), time.perf_counter() - start)
        return hits, latency

    @classmethod
    def build(cls, root: str, items: Items, extractor: Extractor, options: BuildOptions,
              skip_duplicates: bool = False) -> Optional["Index"]:
        """Index ``items`` into the new folder ``root`` (or finish an interrupted build of the same items).

        Returns the opened index on rank 0, None on other processes.
        """
        options.check()
        if os.path.isfile(os.path.join(root, store.MANIFEST)):
            raise FileExistsError(f"{root} already holds an index: use --add to add drawings, or another folder")
        items, _ = drop_duplicates(items, skip=skip_duplicates)
        if not len(items):
            raise ValueError("no drawings to index")
        run_build(root, items, extractor, options, first_shard=0)
        return cls.open(root, extractor) if comm.is_main_process() else None

    def add(self, items: Items, skip_duplicates: bool = False, batch_size: Optional[int] = None,
            num_workers: Optional[int] = None) -> int:
        """Extract only ``items`` into new shards, then rebuild DBA and faiss from all shards; returns how many
        drawings were added. The index's own model is used."""
        if self.extractor is None:
            raise RuntimeError(f"{self.root} was opened without its model; adding drawings needs it")
        items, _ = drop_duplicates(items, existing=self.paths, skip=skip_duplicates)
        if not len(items):
            logger.info("Nothing to add to %s", self.root)
            return 0
        o = dict(self.manifest["options"])
        o["retrieval"] = RetrievalOptions.from_dict(o["retrieval"])
        options = BuildOptions(**o)
        if batch_size is not None:
            options.batch_size = batch_size
        if num_workers is not None:
            options.num_workers = num_workers
        run_build(self.root, items, self.extractor, options, first_shard=len(self.manifest["shards"]))
        comm.synchronize()
        self.__init__(self.root, self.extractor)
        return len(items)
