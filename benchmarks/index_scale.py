"""Index folders at scale for ``benchmarks/search_latency.py``: synthetic clustered features written as shards,
structures built by the search index's own build code, opened memory-mapped and searched with features.

Features: families of ``FAMILY`` drawings (objects of one kind) made of patents of ``VIEWS`` drawings:
``family centre + 0.6 x patent offset + 0.5 x view noise`` (each term ~N(0, I/dim)), so a drawing's ten nearest
neighbours are its patent's other views and drawings of its family, as with a trained model's features; queries
are new views of indexed patents. Rows are written ``CHUNK`` at a time; nothing holds all features.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fastreid.evaluation.pipeline import RetrievalOptions
from fastreid.evaluation.search import normalize, recall_against_exact
from fastreid.retrieval import BuildOptions, Index
from fastreid.retrieval import store
from fastreid.retrieval.build import finalize_build
from fastreid.retrieval.structure import StoredFeatures, exact_search

FAMILY, VIEWS, CHUNK = 40, 4, 100_000
GB = 2 ** 30


def _chunk_patents(seed: int, chunk: int, rows: int, dim: int) -> Tuple[np.ndarray, np.random.Generator]:
    """Patent centres of chunk ``chunk`` (``rows`` rows) and the generator that continues with its view noise."""
    rng = np.random.default_rng([seed, chunk])
    scale = np.float32(1 / np.sqrt(dim))
    families = rng.standard_normal((-(-rows // FAMILY), dim), dtype=np.float32) * scale
    patents = -(-rows // VIEWS)
    centres = families[np.arange(patents) * VIEWS // FAMILY]
    return centres + 0.6 * scale * rng.standard_normal((patents, dim), dtype=np.float32), rng


def chunk_features(seed: int, chunk: int, rows: int, dim: int) -> np.ndarray:
    """The ``rows`` float32 features of chunk ``chunk`` (rows ``chunk x CHUNK`` on)."""
    centres, rng = _chunk_patents(seed, chunk, rows, dim)
    return centres[np.arange(rows) // VIEWS] + 0.5 / np.sqrt(dim) * rng.standard_normal((rows, dim),
                                                                                        dtype=np.float32)


def query_features(size: int, dim: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` new views (not indexed) of randomly picked indexed patents."""
    rng = np.random.default_rng([seed, 1 << 20])
    rows = np.sort(rng.integers(0, size, count))
    out = np.empty((count, dim), np.float32)
    for chunk in np.unique(rows // CHUNK):
        at = np.nonzero(rows // CHUNK == chunk)[0]
        centres, _ = _chunk_patents(seed, int(chunk), min(CHUNK, size - int(chunk) * CHUNK), dim)
        out[at] = centres[(rows[at] - chunk * CHUNK) // VIEWS]
    out += 0.5 / np.sqrt(dim) * rng.standard_normal((count, dim), dtype=np.float32)
    return out[rng.permutation(count)]


def write_collection(folder: str, size: int, dim: int, dtype: str, shard_size: int, seed: int = 0) -> None:
    """Shards (``store.write_shard``: features and item lists) of ``size`` synthetic features into ``folder/shards``."""
    if CHUNK % shard_size:
        raise ValueError(f"--shard-size must divide {CHUNK}")
    for chunk, start in enumerate(range(0, size, CHUNK)):
        feats = chunk_features(seed, chunk, min(CHUNK, size - start), dim).astype(dtype)
        for s in range(0, len(feats), shard_size):
            first = start + s
            rows = feats[s:s + shard_size]
            paths = [f"d{first + i:08d}.png" for i in range(len(rows))]
            patents = [f"P{(first + i) // VIEWS:07d}" for i in range(len(rows))]
            store.write_shard(folder, first // shard_size, rows, paths, patents)


def status_gb(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``, ...) in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024 / GB
    raise KeyError(field)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GiB; ``VmHWM``, which counts the mapped file pages it touched:
    page cache the kernel can drop). Not ``getrusage``: a spawned process would report its parent's peak."""
    return status_gb("VmHWM")


def build_step(shards: str, root: str, options: BuildOptions) -> Dict[str, float]:
    """An index folder in ``root`` over the shards in ``shards`` (linked), built by ``finalize_build``."""
    os.makedirs(root)
    os.symlink(os.path.abspath(shards), os.path.join(root, store.SHARD_DIR))
    with open(os.path.join(root, store.CONFIG), "w") as f:
        f.write("# synthetic features: no model\n")
    num = len([f for f in os.listdir(shards) if f.endswith(".npy")])
    anon = [status_gb("RssAnon")]
    done = threading.Event()

    def sample() -> None:  # the kernel keeps no high-water mark of anonymous memory alone
        while not done.wait(0.2):
            anon.append(status_gb("RssAnon"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    finalize_build(root, options, num, {"synthetic": True}, {"kind": "none"})
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    path = os.path.join(root, store.FAISS_FILE)
    return {"build_s": seconds, "build_gb": peak_rss_gb(), "build_anon_gb": max(anon),
            "file_gb": os.path.getsize(path) / GB if os.path.isfile(path) else 0.0}


def latencies(fn: Callable[[Any], Any], queries: Any, batch: int, repeats: int, warm: bool = True) -> List[float]:
    """Milliseconds of ``fn`` on ``repeats`` successive batches of ``batch`` queries (an array or tensor), after one
    untimed call when ``warm``."""
    if warm:
        fn(queries[:batch])
    out = []
    for r in range(repeats):
        q = queries[(r * batch) % len(queries):][:batch]
        start = time.perf_counter()
        fn(q)
        out.append(1000 * (time.perf_counter() - start))
    return out


def serve_step(root: str, queries: np.ndarray, nprobes: Sequence[int], reps: Dict[int, int],
               exact: Optional[np.ndarray]) -> Dict[str, Any]:
    """Open ``root`` memory-mapped, then per nprobe: latencies and recall@10 of the first 100 queries."""
    start = time.perf_counter()
    index = Index.open(root, load_extractor=False)
    if index.options.index != "flat":
        index.structure()
    open_s = time.perf_counter() - start
    q = torch.from_numpy(queries)
    rows = []
    for nprobe in nprobes:
        def fn(x: torch.Tensor, nprobe: Optional[int] = nprobe or None) -> np.ndarray:
            return index.search_features(x, 10, nprobe=nprobe)[1]
        top = fn(q[:100])
        cells = []
        for batch, repeats in reps.items():
            ms = latencies(fn, q, batch, repeats)
            cells += [float(np.percentile(ms, 50)), float(np.percentile(ms, 99))]
        recall = 1.0 if exact is None else recall_against_exact(torch.from_numpy(top), torch.from_numpy(exact))
        rows.append({"nprobe": nprobe, "cells": cells, "recall": recall, "top": top.tolist()})
    # RssAnon: the process's own memory (not file pages) at the end, which the kernel cannot drop.
    return {"open_s": open_s, "serve_gb": peak_rss_gb(), "anon_gb": status_gb("RssAnon"), "rows": rows}


def _run(isolate: bool, fn: Callable[..., Dict[str, Any]], *args: Any) -> Dict[str, Any]:
    """``fn(*args)`` in a fresh process (its own peak RAM) or here (peak RAM not measured: None)."""
    if not isolate:
        out = fn(*args)
        return {k: (None if k.endswith("_gb") and k != "file_gb" else v) for k, v in out.items()}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def index_table(args: Any) -> List[List[Any]]:
    """One row per structure and nprobe (see the module docstring); the work folder is removed at the end."""
    work = os.path.join(args.workdir, f"index_scale_{args.size}")
    if os.path.exists(work):
        raise FileExistsError(f"{work} exists (an earlier run?): remove it or pass another --workdir")
    collection = os.path.join(work, "collection")
    os.makedirs(os.path.join(collection, store.SHARD_DIR))
    shards = os.path.join(collection, store.SHARD_DIR)
    try:
        start = time.perf_counter()
        write_collection(collection, args.size, args.dim, args.dtype, args.shard_size)
        print(f"(wrote {args.size:,} x {args.dim} {args.dtype} features in {time.perf_counter() - start:.0f} s; "
              f"queries: new views of indexed patents)", flush=True)
        queries = query_features(args.size, args.dim, args.queries)
        reps = {1: args.repeats_single, 100: args.repeats_batch}
        table: List[List[Any]] = []
        exact = None
        if "flat" not in args.types:  # the exact reference without timing a flat index: the same search
            stored = StoredFeatures.of_index(collection, len(os.listdir(shards)) // 2, dba=False)
            exact = exact_search(normalize(torch.from_numpy(queries[:100])), stored, 10)[1].numpy()
        for kind in args.types:
            retrieval = RetrievalOptions(index=kind, nlist=args.nlist, nprobe=args.nprobe[0])
            options = BuildOptions(dtype=args.dtype, shard_size=args.shard_size, retrieval=retrieval)
            root = os.path.join(work, kind)
            built = _run(args.isolate, build_step, shards, root, options)
            served = _run(args.isolate, serve_step, root, queries, [0] if kind == "flat" else args.nprobe, reps,
                          exact)
            manifest = json.load(open(os.path.join(root, store.MANIFEST)))
            for row in served["rows"]:
                if kind == "flat":
                    exact = np.array(row["top"])
                label = manifest["faiss"]["factory"] if kind == "flat" else \
                    f"{manifest['faiss']['factory']}, nprobe {row['nprobe']}"
                table.append([f"{kind}: {label}", built["build_s"], built["build_gb"], built["build_anon_gb"],
                              built["file_gb"],
                              served["open_s"], served["serve_gb"], served["anon_gb"], *row["cells"], row["recall"]])
                print(table[-1], flush=True)
            shutil.rmtree(root)
        return table
    finally:
        shutil.rmtree(work, ignore_errors=True)
