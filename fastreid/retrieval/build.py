"""Building a search index: extract features into shards (resumable; under torchrun each process its own
contiguous shards), then DBA (rank 0), the IVF structure (every process adds its shards, rank 0 merges:
:mod:`.structure`) and the manifest with the retrieval options. :class:`~.index.Index` calls
:func:`run_build` for ``build`` and ``add``.
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import fastreid
from fastreid.config.checks import choice_problem
from fastreid.evaluation import DatasetEvaluator, inference_on_dataset
from fastreid.evaluation.pipeline import RetrievalOptions, prepare_gallery
from fastreid.evaluation.reid_evaluation import FEAT_DTYPES
from fastreid.evaluation.search import faiss
from fastreid.utils import comm
from fastreid.utils.file_io import atomic_open

from . import store
from .extractor import Extractor
from .items import Items
from .structure import StoredFeatures, build_structure
from .unfinished import resume_unfinished

logger = logging.getLogger(__name__)


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


def run_build(root: str, items: Items, extractor: Extractor, options: BuildOptions, first_shard: int) -> None:
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

