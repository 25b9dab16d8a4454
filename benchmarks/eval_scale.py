"""Time and memory of the post-extraction evaluation stage at scale, against the reference way.

Both pipelines run on the same random features (clustered by id so that metrics are meaningful):

- ours: alpha-QE over queries and database (k-NN search + chunked weighted means), exact metrics in
  query chunks (mAP, mAP@10, CMC, mINP) with the top-10 lists, result.npy written atomically;
- reference: dense ``N x N`` similarity + per-row QE loop, dense ``Q x G`` distance matrix, full
  argsort and per-row metrics. Where it would take too long it runs on ``--ref-rows`` rows and its
  time is extrapolated linearly; its peak memory is the size of the dense matrices it holds.

With ``--processes N`` (default 2) the same stage also runs in N gloo processes that each keep only their
part of the database (``TEST.SHARD_GALLERY``, :mod:`fastreid.evaluation.sharded`): time and the largest
per-process memory.

A second table ranks ``--million-queries`` queries against a ``--million-size`` gallery exactly in
bounded memory, and measures a faiss IVF index's recall@10 against that exact search.

Each measurement runs in its own process, so the peak RSS is that stage's own.

    python benchmarks/eval_scale.py --queries 13133 --database 38834 --dim 2048
    python benchmarks/eval_scale.py --queries 2000 --database 6000 --dim 256 --million-size 100000
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
import torch.distributed as dist
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.evaluation import sharded  # noqa: E402
from fastreid.evaluation.metrics import per_query_metrics, rank_positives_chunked, summarize  # noqa: E402
from fastreid.evaluation.pipeline import RetrievalOptions  # noqa: E402
from fastreid.evaluation.query_expansion import aqe  # noqa: E402
from fastreid.evaluation.search import FaissIndex, normalize, recall_against_exact  # noqa: E402
from fastreid.evaluation.submission import write_result  # noqa: E402

GB = 2 ** 30


def _status_bytes(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    raise KeyError(field)


def start_measuring() -> float:
    """Reset the peak-RSS mark (Linux ``clear_refs``) and return the current RSS in bytes.

    The inputs' generation has its own transient peak; resetting it makes the stage's peak its own.
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS")
    except OSError:  # not Linux: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def peak_rss() -> float:
    """Peak resident memory since :func:`start_measuring`, in bytes."""
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def make_inputs(nq: int, ng: int, dim: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray,
                                                                      np.ndarray]:
    """Features ``centre[id] + sigma * N(0, 1)`` (about 5.6 database items per id, as in DeepPatent).

    ``sigma`` puts the same-id cosine (``1 / (1 + sigma^2)``) at 4 standard deviations of the cosine of
    unrelated pairs (``1 / sqrt(dim)``), so that the metrics are far from both 0 and 100%.
    """
    noise = math.sqrt(max(math.sqrt(dim) / 4 - 1, 0.25))
    gen = torch.Generator().manual_seed(seed)
    num_ids = max(1, ng * 10 // 56)
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, num_ids, ng)
    q_pids = g_pids[rng.integers(0, ng, nq)]
    centres = torch.randn(num_ids, dim, generator=gen)
    feats = []
    for pids in (q_pids, g_pids):
        out = torch.empty(len(pids), dim)
        for s in range(0, len(pids), 65536):
            part = torch.from_numpy(pids[s:s + 65536])
            out[s:s + 65536] = centres[part] + noise * torch.randn(len(part), dim, generator=gen)
        feats.append(out)
    return feats[0], feats[1], q_pids, g_pids


def run_ours(args: argparse.Namespace) -> Dict[str, Any]:
    q, g, q_pids, g_pids = make_inputs(args.queries, args.database, args.dim)
    base = start_measuring()
    start = time.perf_counter()
    q, g = aqe(q, g, qe_times=1, qe_k=args.qe_k, alpha=args.alpha, backend=args.backend)
    t_qe = time.perf_counter() - start
    q, g = normalize(q), normalize(g)
    res = rank_positives_chunked(q, g, q_pids, g_pids, metric="cosine", topk=10)
    summary = summarize(per_query_metrics(res["ranks"], res["num_pos"]))
    with tempfile.TemporaryDirectory() as tmp:
        write_result(os.path.join(tmp, "result.npy"), res["topk_idx"])
    total = time.perf_counter() - start
    return {"time": total, "time_qe": t_qe, "peak": peak_rss(), "inputs": base, "mAP": summary["mAP"],
            "top10": res["topk_idx"][:50]}


def _sharded_worker(rank: int, args: argparse.Namespace, world: int, tmp: str) -> None:
    """One of ``world`` processes: :func:`run_ours`'s stage with only its part of the database."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rdzv", rank=rank, world_size=world)
    try:
        q, g, q_pids, g_pids = make_inputs(args.queries, args.database, args.dim)
        lo, hi = len(g) * rank // world, len(g) * (rank + 1) // world
        local = g[lo:hi].clone()
        del g
        base = start_measuring()
        start = time.perf_counter()
        shards = sharded.GalleryShards.of(len(local), args.dim)
        options = RetrievalOptions(qe_k=args.qe_k, qe_alpha=args.alpha, backend="torch")
        q, local = sharded.post_process(q, local, shards, options)
        t_qe = time.perf_counter() - start
        res = sharded.positive_ranks(q, local, shards, q_pids, g_pids, topk=10)
        out = {"time_qe": t_qe, "inputs": base, "held": shards.peak_rows}
        if rank == 0:
            out["mAP"] = summarize(per_query_metrics(res["ranks"], res["num_pos"]))["mAP"]
            with tempfile.TemporaryDirectory() as res_dir:
                write_result(os.path.join(res_dir, "result.npy"), res["topk_idx"])
        dist.barrier()
        out.update(time=time.perf_counter() - start, peak=peak_rss())
        with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def run_sharded(args: argparse.Namespace) -> Dict[str, Any]:
    """:func:`run_ours` in ``args.processes`` processes over gallery parts: the slowest process's time, the
    largest process's memory."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_sharded_worker, args=(args, args.processes, tmp), nprocs=args.processes)
        ranks = [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(args.processes)]
    worst = max(ranks, key=lambda r: r["peak"] - r["inputs"])
    return {"time": max(r["time"] for r in ranks), "time_qe": max(r["time_qe"] for r in ranks),
            "peak": worst["peak"], "inputs": worst["inputs"], "mAP": ranks[0]["mAP"],
            "held": max(r["held"] for r in ranks)}


def _reference_qe_rows(feats: np.ndarray, normed: torch.Tensor, rows: int, k: int, alpha: float) -> np.ndarray:
    """The reference's per-row loop over ``rows`` rows of a dense similarity matrix."""
    sims = (normed[:rows] @ normed.t()).numpy()
    out = []
    for sim in sims:
        top = np.argpartition(-sim, range(1, k + 1))[:k]
        out.append(np.mean(feats[top] * np.power(sim[top], alpha)[:, None], axis=0))
    return np.stack(out)


def _reference_metrics_rows(q: torch.Tensor, g: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray) -> float:
    """Dense distance rows, full argsort, per-row AP: the reference's metric computation."""
    dist = (1 - q @ g.t()).numpy()
    order = np.argsort(dist, axis=1, kind="stable")
    matches = (g_pids[order] == q_pids[:, None]).astype(np.int32)
    aps = []
    for row in matches:
        hits = np.flatnonzero(row)
        if len(hits):
            aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
    return float(np.mean(aps)) if aps else float("nan")


def run_reference(args: argparse.Namespace) -> Dict[str, Any]:
    q, g, q_pids, g_pids = make_inputs(args.queries, args.database, args.dim)
    n, nq, ng = args.queries + args.database, args.queries, args.database
    rows_qe, rows_m = min(args.ref_rows, n), min(args.ref_rows, nq)
    feats = torch.cat([q, g]).numpy()
    normed = normalize(torch.cat([q, g]))
    start = time.perf_counter()
    _reference_qe_rows(feats, normed, rows_qe, args.qe_k, args.alpha)
    t_qe = (time.perf_counter() - start) * n / rows_qe
    qn, gn = normalize(q[:rows_m]), normalize(g)
    start = time.perf_counter()
    _reference_metrics_rows(qn, gn, q_pids[:rows_m], g_pids)
    t_m = (time.perf_counter() - start) * nq / rows_m
    dense_bytes = 4.0 * n * n + 4.0 * 2 * n * args.dim + (4 + 8 + 4) * nq * ng
    return {"time": t_qe + t_m, "time_qe": t_qe, "peak": dense_bytes,
            "extrapolated": rows_qe < n or rows_m < nq}


def run_million_ours(args: argparse.Namespace) -> Dict[str, Any]:
    q, g, q_pids, g_pids = make_inputs(args.million_queries, args.million_size, args.million_dim, seed=1)
    q, g = normalize(q), normalize(g)
    base = start_measuring()
    start = time.perf_counter()
    res = rank_positives_chunked(q, g, q_pids, g_pids, metric="cosine", topk=10)
    summary = summarize(per_query_metrics(res["ranks"], res["num_pos"]))
    t_exact = time.perf_counter() - start
    peak = peak_rss()
    exact = torch.from_numpy(res["topk_idx"])
    start = time.perf_counter()
    index = FaissIndex(g, "cosine", "ivf", nlist=args.nlist, use_gpu=False)
    t_build = time.perf_counter() - start
    ivf = []
    for nprobe in (args.nprobe, 4 * args.nprobe):
        index.nprobe = nprobe
        start = time.perf_counter()
        _, ivf_idx = index.search(q, 10)
        ivf.append((nprobe, time.perf_counter() - start, recall_against_exact(ivf_idx, exact)))
    return {"time": t_exact, "peak": peak, "inputs": base, "mAP": summary["mAP"], "ivf_build": t_build,
            "ivf": ivf}


def run_million_reference(args: argparse.Namespace) -> Dict[str, Any]:
    q, g, q_pids, g_pids = make_inputs(args.million_queries, args.million_size, args.million_dim, seed=1)
    rows = min(args.million_ref_rows, args.million_queries)
    qn, gn = normalize(q[:rows]), normalize(g)
    start = time.perf_counter()
    _reference_metrics_rows(qn, gn, q_pids[:rows], g_pids)
    t = (time.perf_counter() - start) * args.million_queries / rows
    return {"time": t, "peak": (4 + 8 + 4) * args.million_queries * args.million_size + 4.0 * g.numel(),
            "extrapolated": rows < args.million_queries}


def in_child(fn: Callable[[argparse.Namespace], Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    """Run ``fn(args)`` in a fresh process so that its peak memory is measured alone."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, (args,))


def _row(name: str, r: Dict[str, Any], inputs: float, note: str = "") -> list:
    """Time, memory above the inputs, and peak RSS (the reference's: inputs plus its dense matrices)."""
    extra = r["peak"] - r["inputs"] if "inputs" in r else r["peak"]
    return [name, f"{r['time']:.1f}", f"{extra / GB:.2f}", f"{(inputs + extra) / GB:.2f}", note]


def _ratio(ref: Dict[str, Any], ours: Dict[str, Any]) -> list:
    ours_extra = max(ours["peak"] - ours["inputs"], 1.0)
    return ["ratio (reference / ours)", f"{ref['time'] / ours['time']:.1f}x", f"{ref['peak'] / ours_extra:.1f}x",
            f"{(ours['inputs'] + ref['peak']) / ours['peak']:.1f}x", ""]


HEADERS = ["pipeline", "time (s)", "memory above inputs (GiB)", "peak RSS (GiB)", "note"]


def main_table(args: argparse.Namespace) -> None:
    """Print the DeepPatent-scale comparison of the whole post-extraction stage."""
    ours = in_child(run_ours, args)
    ref = in_child(run_reference, args)
    note = f"extrapolated from {args.ref_rows} rows; memory = dense matrices" if ref["extrapolated"] else \
        "memory = dense matrices"
    print(f"\nPost-extraction stage: {args.queries} queries x {args.database} database x {args.dim}-d, "
          f"AQE k={args.qe_k} alpha={args.alpha} over both ({args.backend} k-NN), cosine, metrics + result.npy "
          f"(ours: mAP {ours['mAP']:.2f}%, inputs {ours['inputs'] / GB:.2f} GiB RSS)")
    base = ours["inputs"]
    rows = [_row("ours", ours, base, f"of which QE {ours['time_qe']:.1f} s"),
            _row("reference", ref, base, note + f"; QE {ref['time_qe']:.1f} s"), _ratio(ref, ours)]
    if args.processes > 1:
        many = run_sharded(args)
        rows.insert(1, _row(f"ours, {args.processes} processes", many, many["inputs"],
                            f"per process (queries + its database part); QE {many['time_qe']:.1f} s; "
                            f"at most {many['held']} database rows held; mAP {many['mAP']:.2f}%"))
    print(tabulate(rows, headers=HEADERS, tablefmt="pipe"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=13133)
    p.add_argument("--database", type=int, default=38834)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--qe-k", type=int, default=5)
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--backend", default="torch", choices=["faiss", "torch"],
                   help="k-NN backend of QE (on CPU the chunked torch search was ~3x faster than faiss flat)")
    p.add_argument("--processes", type=int, default=2,
                   help="also run the stage in this many gloo processes over database parts (1: skip)")
    p.add_argument("--ref-rows", type=int, default=1000, help="rows the reference runs before extrapolating")
    p.add_argument("--million-size", type=int, default=1_000_000, help="gallery size of the second table")
    p.add_argument("--million-queries", type=int, default=1000)
    p.add_argument("--million-dim", type=int, default=512)
    p.add_argument("--million-ref-rows", type=int, default=20)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--skip-million", action="store_true")
    p.add_argument("--skip-main", action="store_true", help="only the million-item table")
    args = p.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if not args.skip_main:
        main_table(args)
    if args.skip_million:
        return
    big = in_child(run_million_ours, args)
    big_ref = in_child(run_million_reference, args)
    print(f"\nExact metrics: {args.million_queries} queries x {args.million_size} gallery x {args.million_dim}-d "
          f"(mAP {big['mAP']:.2f}%, inputs {big['inputs'] / GB:.2f} GiB RSS)")
    base = big["inputs"]
    print(tabulate([_row("ours, exact (chunked)", big, base, "mAP, mAP@10, CMC, mINP + top-10"),
                    _row("reference, dense + argsort", big_ref, base,
                         f"extrapolated from {args.million_ref_rows} rows; memory = dense matrices"),
                    _ratio(big_ref, big),
                    [f"faiss IVF build (nlist {args.nlist})", f"{big['ivf_build']:.1f}", "-", "-",
                     "k-means training + adding the gallery"]]
                   + [[f"faiss IVF search, nprobe {nprobe}", f"{t:.1f}", "-", "-",
                       f"top-10 recall vs exact: {recall:.4f}"] for nprobe, t, recall in big["ivf"]],
                   headers=HEADERS, tablefmt="pipe"))


if __name__ == "__main__":
    main()
