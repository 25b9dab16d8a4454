"""Search index speed and memory: index folders of Flat / IVF / IVF-PQ at scale, then the model in the loop.

Tables:

1. (default) Index folders of ``--size`` x ``--dim`` synthetic clustered features (:mod:`index_scale`,
   ``--dtype float16`` shards written with the index's store functions): for each structure, the real
   build code (``finalize_build``: sampled training, shard-by-shard adding), then ``Index.open`` (memory-mapped)
   and ``Index.search_features``: build time and peak RAM, file size, open time and the serving process's
   peak RAM, p50/p99 latency of 1 query and of 100, recall@10 against exact search. Each build and each
   serving run is a fresh process (``--no-isolate``: in this one, without peak RAM).
2. ``--in-memory``: the structures in RAM (:class:`fastreid.evaluation.search.FaissIndex`) next to a plain numpy
   and torch brute force over the same ``--size`` features (noisy groups of ~4, the earlier benchmark).
3. The demo-size model (ResNet18-IBN-a at 96 px; ``--weights`` or random weights) on real synthetic
   drawings through ``Index.build`` / ``Index.search`` with file paths: extraction rate, and
   end-to-end query latency (read + preprocess + embed + search).

    python benchmarks/search_latency.py --size 2700000 --skip-model   # DeepPatent2 size (about an hour, ~7 GB RAM)
    python benchmarks/search_latency.py --small                       # seconds
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import index_scale  # noqa: E402
from fastreid.evaluation.search import FaissIndex, auto_nlist, faiss, recall_against_exact  # noqa: E402
from fastreid.retrieval import BuildOptions, Index, TorchExtractor, collect_images  # noqa: E402

GB = 2 ** 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_features(size: int, dim: int, seed: int = 0) -> np.ndarray:
    """``size x dim`` normalised float32 rows in groups of ~4 around shared centres (patents and their views)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, size // 4), dim), dtype=np.float32)
    feats = np.empty((size, dim), np.float32)
    for s in range(0, size, 100_000):
        n = min(100_000, size - s)
        feats[s:s + n] = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim),
                                                                                             dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats


def numpy_brute(db: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        sims = q @ db.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        return np.take_along_axis(top, order, 1)
    return search


def torch_brute(db: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    dbt = torch.from_numpy(db)
    return lambda q: torch.topk(torch.from_numpy(q) @ dbt.T, k, dim=1).indices.numpy()


def _lat_cells(fn: Callable[[np.ndarray], Any], queries: np.ndarray, reps: Dict[int, int]) -> List[float]:
    cells = []
    for batch, repeats in reps.items():
        ms = index_scale.latencies(fn, queries, batch, repeats, warm=batch == 1)  # 100 queries need no warm-up
        cells += [float(np.percentile(ms, 50)), float(np.percentile(ms, 99))]
    return cells


def feature_table(args: argparse.Namespace) -> List[List[Any]]:
    db = make_features(args.size, args.dim)
    rng = np.random.default_rng(1)
    # Queries: other views of indexed patents (an indexed row plus noise), so neighbours are meaningful.
    pick = rng.integers(0, args.size, args.queries)
    queries = db[pick] + 0.5 * rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    data_gb = db.nbytes / GB
    reps = {1: args.repeats_single, 100: args.repeats_batch}
    rows: List[List[Any]] = []
    exact = torch_brute(db, 10)(queries[:100])
    for name, make in (("numpy brute force", numpy_brute), ("torch brute force", torch_brute)):
        fn = make(db, 10)
        recall = recall_against_exact(torch.from_numpy(fn(queries[:100])), torch.from_numpy(exact))
        rows.append([name, 0.0, data_gb, *_lat_cells(fn, queries, reps), recall])
    for kind, name in (("flat", "Flat"), ("ivf", "IVF"), ("ivf-pq", "IVF-PQ")):
        start = time.perf_counter()
        ann = FaissIndex(torch.from_numpy(db), "cosine", kind, nlist=args.nlist, use_gpu=False)
        build_s = time.perf_counter() - start
        size = faiss.serialize_index(ann.index).nbytes / GB
        for nprobe in ([0] if kind == "flat" else args.nprobe):
            if nprobe:
                ann.nprobe = nprobe
            fn = lambda q, ann=ann: ann.search(torch.from_numpy(q), 10)[1].numpy()  # noqa: E731
            recall = recall_against_exact(torch.from_numpy(fn(queries[:100])), torch.from_numpy(exact))
            label = "faiss Flat (index)" if kind == "flat" else f"faiss {name} nlist {args.nlist}, nprobe {nprobe}"
            rows.append([label, build_s, size, *_lat_cells(fn, queries, reps), recall])
        del ann
    print(f"(features: {args.size:,} x {args.dim}, {data_gb:.2f} GiB float32; process RSS at the end "
          f"{index_scale.status_gb('VmRSS'):.2f} GiB)")
    return rows


def model_table(args: argparse.Namespace) -> List[List[Any]]:
    from fastreid.config import get_cfg
    from fastreid.data.synthetic import SyntheticSpec, generate
    from fastreid.modeling import build_model

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        generate(data, SyntheticSpec(num_patents=args.patents, image_size=args.image_size, seed=0), workers=1)
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(ROOT, "configs", "demo", "demo_R18-ibn_96.yml"))
        # No post-processing: the table times embedding and search (the demo config chooses an expansion on a
        # labeled split, which this benchmark does not evaluate).
        cfg.merge_from_list(["DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu", "TEST.AQE.AUTO", "False"]
                            + args.opts)
        if not args.weights:
            args.weights = os.path.join(tmp, "random.pth")
            torch.manual_seed(0)
            torch.save({"model": build_model(cfg).state_dict()}, args.weights)
        cfg.MODEL.WEIGHTS = args.weights
        lists = os.path.join(data, "test_data", "codalab_test_set", "lists")
        database = collect_images(os.path.join(data, "train_data", "patent_data"))
        # Query drawings repeated up to a batch of 100 (latency does not depend on which drawing it is).
        queries = np.resize(np.array(collect_images(os.path.join(lists, "test_queries.txt")).paths), 100)
        extractor = TorchExtractor(cfg)
        start = time.perf_counter()
        index = Index.build(os.path.join(tmp, "index"), database, extractor, BuildOptions.from_config(cfg))
        build_s = time.perf_counter() - start
        feats = index.features().numpy()
        normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        size_test = "x".join(str(s) for s in cfg.INPUT.SIZE_TEST)
        rows = []
        search = lambda q: index.search(list(q), 10)  # noqa: E731
        rows.append([f"Index.search(paths), {len(index)} drawings {size_test}, Flat", build_s,
                     *_lat_cells(search, queries, {1: args.repeats_single, 100: args.repeats_batch})])
        brute = numpy_brute(normed, min(10, len(index) - 1))
        embed = lambda q: brute(index.embed(list(q)).numpy())  # noqa: E731
        rows.append(["embed + numpy brute force", build_s,
                     *_lat_cells(embed, queries, {1: args.repeats_single, 100: args.repeats_batch})])
        print(f"(drawings: {len(index)} indexed at {len(index) / build_s:.1f} drawings/s; "
              f"weights {'random' if 'random.pth' in args.weights else args.weights})")
        return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1_000_000, help="synthetic indexed features")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (default: by size, as --index-type auto)")
    p.add_argument("--nprobe", type=int, nargs="+", default=None,
                   help="IVF lists visited, one row each (default 8 16 32 64; --in-memory 32 128)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored features")
    p.add_argument("--shard-size", type=int, default=10000, help="features per shard (divides 100,000)")
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="where the index folders are written")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="build and serve in this process (no peak RAM column)")
    p.add_argument("--types", nargs="+", choices=("flat", "ivf", "ivf-pq"), default=["flat", "ivf", "ivf-pq"],
                   help="index folders to measure (recall is against exact search either way)")
    p.add_argument("--in-memory", action="store_true",
                   help="the structures in RAM next to numpy/torch brute force instead of index folders")
    p.add_argument("--repeats-single", type=int, default=30, help="timed single queries")
    p.add_argument("--repeats-batch", type=int, default=3, help="timed batches of 100 queries")
    p.add_argument("--patents", type=int, default=100, help="synthetic patents for the model table")
    p.add_argument("--image-size", type=int, default=128, help="synthetic drawing size")
    p.add_argument("--weights", default="", help="checkpoint of the model table (default: random weights)")
    p.add_argument("--small", action="store_true", help="a quick run: 20,000 features, 12 patents at 32 px")
    p.add_argument("--skip-model", action="store_true", help="only the feature table")
    p.add_argument("--skip-features", action="store_true", help="only the model table")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides of the model table")
    args = p.parse_args()
    if args.small:
        args.size, args.queries, args.repeats_single, args.repeats_batch = 20_000, 300, 10, 2
        args.patents, args.image_size = 12, 32
    args.nlist = args.nlist or auto_nlist(args.size)
    args.nprobe = args.nprobe or ([32, 128] if args.in_memory else [8, 16, 32, 64])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, faiss {faiss.__version__}, torch {torch.__version__}")
    heads = ["method", "build s", "index GiB", "1 query p50 ms", "1 query p99 ms", "100 queries p50 ms",
             "100 queries p99 ms", "recall@10"]
    if not args.skip_features and args.in_memory:
        print(tabulate(feature_table(args), headers=heads, tablefmt="pipe", floatfmt=".3g"))
    elif not args.skip_features:
        heads = ["index folder", "build s", "build peak GiB", "build anon GiB", "faiss file GiB", "open s",
                 "serving peak GiB", "serving anon GiB", *heads[3:]]
        print(f"(index folders of {args.size:,} x {args.dim} {args.dtype} features in {args.workdir})")
        print(tabulate(index_scale.index_table(args), headers=heads, tablefmt="pipe", floatfmt=".3g"))
    if not args.skip_model:
        heads = ["pipeline", "build s", "1 query p50 ms", "1 query p99 ms", "100 queries p50 ms", "100 queries p99 ms"]
        print(tabulate(model_table(args), headers=heads, tablefmt="pipe", floatfmt=".3g"))


if __name__ == "__main__":
    main()
