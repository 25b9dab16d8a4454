"""benchmarks/search_latency.py runs small and reports consistent rows (exact methods have recall 1)."""
import argparse
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("search_latency", os.path.join(REPO, "benchmarks",
                                                                                 "search_latency.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_latency_benchmark_small(tmp_path):
    bench = _load_benchmark()
    args = argparse.Namespace(size=3000, dim=32, queries=200, nlist=16, nprobe=[4, 16], repeats_single=5,
                              repeats_batch=2, patents=6, image_size=32, weights="", opts=["INPUT.SIZE_TEST", "[32, 32]"])
    rows = bench.feature_table(args)
    names = [r[0] for r in rows]
    assert names[:3] == ["numpy brute force", "torch brute force", "faiss Flat (index)"]
    assert any(n.startswith("faiss IVF nlist") for n in names) and any(n.startswith("faiss IVF-PQ") for n in names)
    by_name = {r[0]: r for r in rows}
    # Exact methods agree with the exact reference; IVF probing every list is exact too.
    for name in names[:3] + ["faiss IVF nlist 16, nprobe 16"]:
        assert by_name[name][-1] == 1.0, name
    for r in rows:
        assert len(r) == 8 and all(v >= 0 for v in r[1:]) and r[3] <= r[4] and r[5] <= r[6]
    # The index folders (shards written, built by the index's build code, opened memory-mapped), in this process.
    args.workdir, args.dtype, args.shard_size, args.isolate = str(tmp_path), "float16", 500, False
    args.types = ["flat", "ivf", "ivf-pq"]
    folder_rows = bench.index_scale.index_table(args)
    assert [r[0].split(":")[0] for r in folder_rows] == ["flat", "ivf", "ivf", "ivf-pq", "ivf-pq"]
    assert folder_rows[0][-1] == 1.0 and folder_rows[2][-1] == 1.0  # exact, and IVF probing every list
    assert folder_rows[0][4] == 0 < folder_rows[4][4] < folder_rows[2][4]  # no flat file; PQ codes < full vectors
    for r in folder_rows:  # peaks are measured only in a process of their own
        assert len(r) == 13 and r[2] is r[3] is r[6] is r[7] is None and r[8] <= r[9] and r[10] <= r[11]
    assert os.listdir(tmp_path) == []  # the work folder is removed
    args.types = ["ivf"]  # without the flat folder the exact reference is the same search
    assert [r[-1] for r in bench.index_scale.index_table(args)] == [r[-1] for r in folder_rows[1:3]]
    model_rows = bench.model_table(args)
    assert len(model_rows) == 2 and all(r[1] > 0 and 0 < r[2] <= r[3] for r in model_rows)
