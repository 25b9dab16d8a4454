"""``Index``: a persistent collection of drawing features that answers nearest-patent queries.

Build: list the drawings, extract their features shard by shard (resumable; under torchrun each
process extracts its own contiguous shards), then prepare the database (DBA, rank 0), build the IVF
structure (every process adds its shards, rank 0 merges: :mod:`.structure`) and write the manifest with
the retrieval options. Search: embed the queries with the index's own model (checked by fingerprint),
then the evaluator's pipeline (``fastreid.evaluation.pipeline.post_process`` and ``rank``) with the
recorded options, so an index answers as the evaluator ranks; searches that do not need every feature
read only what they use from disk (:mod:`.structure`). This class only stores features and wires those
functions.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import fastreid
from fastreid.config.checks import choice_problem
from fastreid.data.preprocess import ImageLike
from fastreid.evaluation import DatasetEvaluator, inference_on_dataset, normalize
from fastreid.evaluation.pipeline import RetrievalOptions, post_process, prepare_gallery, rank
from fastreid.evaluation.reid_evaluation import FEAT_DTYPES
from fastreid.evaluation.search import FaissIndex, faiss, recheck, resolve_backend
from fastreid.utils import comm
from fastreid.utils.file_io import atomic_open

from . import store
from .extractor import Extractor, check_fingerprint, load_recorded_extractor
from .items import Items, drop_duplicates
from .structure import StoredFeatures, build_structure, exact_search, expand_queries
from .unfinished import resume_unfinished

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


@dataclass
class BuildOptions:
    """How features are stored and the structure trained; ``retrieval`` is how the index is searched
    (the evaluator's options: DBA, query expansion, faiss structure), recorded in the manifest.

    ``train_size`` features (0: ``max(100000, 39 x nlist)``) sampled with ``seed`` train IVF types.
    """

    dtype: str = "float32"
    shard_size: int = 10000
    batch_size: int = 64
    num_workers: int = 0
    train_size: int = 0
    seed: int = 0
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)

    @classmethod
    def from_config(cls, cfg: Any, choice: Any = None, **overrides: Any) -> "BuildOptions":
        """Storage from ``TEST.FEAT_DTYPE``/``IMS_PER_BATCH``/``DATALOADER.NUM_WORKERS``; retrieval options
        from ``TEST.*`` and, with ``TEST.AQE.AUTO``, the evaluation's recorded ``choice`` (a ``QEChoice``).
        ``overrides`` name fields of either (``shard_size=...``, ``dba=True``, ``index="ivf"``)."""
        t = cfg.TEST
        retrieval_fields = {f.name for f in dataclasses.fields(RetrievalOptions)}
        changes = {k: v for k, v in overrides.items() if k in retrieval_fields}
        values = dict(dtype=t.FEAT_DTYPE, batch_size=int(t.IMS_PER_BATCH), num_workers=int(cfg.DATALOADER.NUM_WORKERS),
                      retrieval=RetrievalOptions.from_config(cfg, choice).replace(**changes))
        values.update((k, v) for k, v in overrides.items() if k not in retrieval_fields)
        return cls(**values)

    def check(self) -> None:
        if self.dtype not in FEAT_DTYPES:
            raise ValueError(choice_problem("feature dtype (TEST.FEAT_DTYPE, --dtype)", self.dtype, tuple(FEAT_DTYPES))[0])
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError(f"shard size and batch size must be >= 1, got {self.shard_size}, {self.batch_size}")
        if self.retrieval.metric != "cosine":
            raise ValueError("a search index ranks by cosine similarity: TEST.METRIC must be 'cosine'")


class _Drawings(Dataset):
    """Drawings prepared by the extractor's preprocessing (the same function as for queries)."""

    def __init__(self, paths: Sequence[str], extractor: Extractor, origins: Dict[str, str]) -> None:
        self.paths, self.preprocess, self.origins = list(paths), extractor.preprocess, origins

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"images": self.preprocess(self.paths[i], self.origins.get(self.paths[i]))}


class _Collect(DatasetEvaluator):
    """Keeps the features in order; with ``on_full``, hands over each run of ``sizes[i]`` rows as it fills."""

    def __init__(self, sizes: Sequence[int] = (),
                 on_full: Optional[Callable[[int, torch.Tensor], None]] = None) -> None:
        self.sizes, self.on_full = list(sizes), on_full
        self.reset()

    def reset(self) -> None:
        self.feats: List[torch.Tensor] = []
        self.done = 0

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        self.feats.append(outputs.detach().cpu())
        while self.on_full is not None and self.done < len(self.sizes):
            pending = torch.cat(self.feats) if self.feats else torch.empty(0)
            if pending.shape[0] < self.sizes[self.done]:
                break
            self.on_full(self.done, pending[:self.sizes[self.done]])
            self.feats = [pending[self.sizes[self.done]:]]
            self.done += 1


def extract(extractor: Extractor, paths: Sequence[str], origins: Dict[str, str], batch_size: int,
            num_workers: int = 0, sizes: Sequence[int] = (),
            on_full: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """Raw float32 features of ``paths`` in order, through :func:`fastreid.evaluation.inference_on_dataset`.

    With ``sizes`` and ``on_full``, ``on_full(j, feats)`` receives the j-th run of ``sizes[j]`` rows as soon
    as it is complete (one loader for all shards; its workers start once) and nothing is returned.
    """
    loader = DataLoader(_Drawings(paths, extractor, origins), batch_size=batch_size, num_workers=num_workers)
    collect = _Collect(sizes, on_full)
    inference_on_dataset(extractor.module, loader, collect, extractor.flip_test, extractor.amp_dtype)
    return torch.cat(collect.feats) if on_full is None else torch.empty(0)


def _items_sha256(items: Items) -> str:
    return hashlib.sha256(json.dumps([items.paths, items.patents]).encode()).hexdigest()


def _plan(first_shard: int, count: int, shard_size: int) -> List[Tuple[int, int, int]]:
    """(shard number, first item, item count) of the new shards."""
    return [(first_shard + j, s, min(shard_size, count - s)) for j, s in enumerate(range(0, count, shard_size))]


def _my_shards(plan: List[Tuple[int, int, int]]) -> List[Tuple[int, int, int]]:
    """This process's contiguous part of the plan (all of it without torchrun)."""
    world, rank = comm.get_world_size(), comm.get_rank()
    lo, hi = len(plan) * rank // world, len(plan) * (rank + 1) // world
    return plan[lo:hi]


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
        _run_build(root, items, extractor, options, first_shard=0)
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
        _run_build(self.root, items, self.extractor, options, first_shard=len(self.manifest["shards"]))
        comm.synchronize()
        self.__init__(self.root, self.extractor)
        return len(items)


def _run_build(root: str, items: Items, extractor: Extractor, options: BuildOptions, first_shard: int) -> None:
    """Plan (or resume) the new shards, extract this process's part, then finalize on rank 0."""
    plan = _plan(first_shard, len(items), options.shard_size)
    state = {"fingerprint": extractor.fingerprint, "first_shard": first_shard, "items_sha256": _items_sha256(items),
             "shards": [[n, c] for n, _, c in plan], "options": _options_dict(options)}
    state_path = os.path.join(root, store.BUILD_STATE)
    refusal = ""
    if comm.is_main_process():
        old = store.read_json(state_path) if os.path.isfile(state_path) else None
        if old is not None:
            refusal = resume_unfinished(root, old, state, plan, items)
        if not refusal:
            os.makedirs(os.path.join(root, store.SHARD_DIR), exist_ok=True)
            store.write_json(state_path, state)
            with atomic_open(os.path.join(root, store.CONFIG), "w") as f:
                f.write(extractor.cfg.dump())
    refusal = comm.all_gather(refusal)[0]  # every process stops, not only rank 0
    if refusal:
        raise ValueError(refusal)
    mine = _my_shards(plan)
    todo = [p for p in mine if not store.shard_done(root, *p[::2])]
    logger.info("Extracting %d of %d shards (%d finished already) into %s", len(todo), len(mine),
                len(mine) - len(todo), root)

    def write(j: int, feats: torch.Tensor) -> None:
        number, start, count = todo[j]
        store.write_shard(root, number, feats.numpy().astype(options.dtype), items.paths[start:start + count],
                          items.patents[start:start + count])
        logger.info("Shard %d written (%d drawings)", number, count)

    if todo:
        paths = [p for _, start, count in todo for p in items.paths[start:start + count]]
        extract(extractor, paths, items.origins, options.batch_size, options.num_workers,
                [count for _, _, count in todo], write)
    comm.synchronize()
    finalize_build(root, options, first_shard + len(plan), extractor.fingerprint, extractor.describe())
    if comm.is_main_process():
        os.remove(state_path)
    comm.synchronize()


def _options_dict(options: BuildOptions) -> Dict[str, Any]:
    """The options that decide the index's content (not how fast it is extracted)."""
    d = asdict(options)
    d.pop("batch_size")
    d.pop("num_workers")
    return d


def finalize_build(root: str, options: BuildOptions, num_shards: int, fingerprint: Dict[str, Any],
                   extractor_entry: Dict[str, Any]) -> None:
    """DBA (rank 0), the faiss structure (every process, :func:`build_structure`) and the manifest (rank 0) over
    shards ``0..num_shards-1``; every process calls it. A ``flat`` index gets no faiss file: it is searched
    exactly over the stored features. ``benchmarks/search_latency.py`` calls it on shards written without a model.
    """
    start = time.perf_counter()
    if faiss is None:
        raise ImportError("the search index needs faiss: pip install faiss-cpu")
    shards = [store.open_shard(root, i) for i in range(num_shards)]
    o = options.retrieval
    if o.dba and comm.is_main_process():
        # DBA averages each drawing with its nearest neighbours among all: every feature in float32 on rank 0.
        feats = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float32) for s in shards]))
        store.write_array(os.path.join(root, store.DBA_FILE), prepare_gallery(feats, o).numpy())
        del feats
    comm.synchronize()
    stored = StoredFeatures.of_index(root, num_shards, o.dba)
    ann = None
    if o.index != "flat":
        ann = build_structure(root, stored, o.index, o.nlist, o.nprobe, o.pq_m, options.train_size, options.seed)
    if not comm.is_main_process():
        return
    if ann is None and os.path.isfile(os.path.join(root, store.FAISS_FILE)):
        os.remove(os.path.join(root, store.FAISS_FILE))  # a flat index written before flat indexes had none
    manifest = {
        "format": store.FORMAT_NAME, "format_version": store.FORMAT_VERSION,
        "project_version": fastreid.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint, "extractor": extractor_entry, "config": store.CONFIG,
        "count": stored.count, "dim": stored.dim, "dtype": options.dtype, "metric": "cosine",
        "shards": [{"features": f, "items": it, "count": int(s.shape[0])}
                   for (f, it), s in ((store.shard_files(i), s) for i, s in enumerate(shards))],
        "faiss": {"file": store.FAISS_FILE if ann else None, "type": o.index,
                  "factory": ann.description() if ann else "none: exact search over the stored features",
                  "nlist": o.nlist,
                  "nprobe": o.nprobe, "pq_m": o.pq_m, "train_size": options.train_size, "seed": options.seed},
        "dba": {"enabled": o.dba, "k": o.dba_k, "alpha": o.dba_alpha, "file": store.DBA_FILE if o.dba else None},
        "retrieval": o.to_dict(),
        "options": _options_dict(options),
    }
    store.write_json(os.path.join(root, store.MANIFEST), manifest)
    logger.info("Index of %d drawings (%d-d, %s, faiss %s) written to %s in %.1f s", manifest["count"],
                manifest["dim"], options.dtype, manifest["faiss"]["factory"], root, time.perf_counter() - start)

