"""The search tools as users run them (real subprocesses, real files): build_index (two processes) then
search gives the single-process evaluator's answers and mAP@10, a killed build resumes without
re-extracting finished shards, another model is refused, and the ONNX export matches PyTorch and
serves the same index."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastreid.data import build_reid_test_loader
from fastreid.data.synthetic import load_test_ground_truth
from fastreid.engine.commands import build_eval_model
from fastreid.evaluation import ReidEvaluator, inference_on_dataset, score_submission
from fastreid.retrieval import BuildOptions, Index, OnnxExtractor, TorchExtractor, collect_images

import retrieval_helpers as rh

MODEL = ["--config-file", rh.CONFIG, *rh.OPTS]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval_tools")
    data = rh.make_data(str(tmp / "data"), num_patents=30)
    queries, database = rh.split_lists(data)
    return {"tmp": tmp, "data": data, "queries": queries, "database": database,
            "m1": rh.make_checkpoint(str(tmp / "m1.pth"), seed=1),
            "m2": rh.make_checkpoint(str(tmp / "m2.pth"), seed=2)}


@pytest.fixture(scope="module")
def built(setup):
    """An index of the synthetic test database built by tools/build_index.py with checkpoint m1, by two
    processes (gloo): each extracts its own shards, rank 0 writes the rest."""
    index_dir = str(setup["tmp"] / "index")
    rh.run_tool("build_index.py", *MODEL, "MODEL.WEIGHTS", setup["m1"], "--images", setup["database"],
                "--output", index_dir, "--shard-size", "5", "--num-gpus", "2")
    return index_dir


def test_build_then_search_gives_the_evaluators_top10_and_map(setup, built, tmp_path):
    cfg = rh.model_cfg(setup["m1"])
    cfg.merge_from_list(["DATASETS.ROOT", setup["data"], "TEST.RESULT_PATH", str(tmp_path / "result.npy")])
    loader, num_query = build_reid_test_loader(cfg, "DeepPatentTest")
    inference_on_dataset(build_eval_model(cfg), loader, ReidEvaluator(cfg, num_query, str(tmp_path), labeled=False))
    expected = np.load(tmp_path / "result.npy")

    out = str(tmp_path / "results.jsonl")
    proc = rh.run_tool("search.py", "--index", built, "--images", setup["queries"], "--topk", "10", "--output", out)
    assert "latency p50" in proc.stderr + proc.stdout
    lines = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert [r["query"] for r in lines] == collect_images(setup["queries"]).paths  # input order
    first = lines[0]["results"][0]
    assert set(first) == {"rank", "path", "item", "patent", "score"} and first["rank"] == 1
    assert first["path"] == collect_images(setup["database"]).paths[first["item"]]
    assert [s["count"] for s in json.load(open(os.path.join(built, "manifest.json")))["shards"]] == [5, 5, 2]
    got = np.array([[r["item"] for r in line["results"]] for line in lines])
    np.testing.assert_array_equal(got, expected)
    q_labels, db_labels = load_test_ground_truth(setup["data"])
    assert score_submission(got, q_labels, db_labels)["mAP@10"] == score_submission(expected, q_labels,
                                                                                  db_labels)["mAP@10"]


@pytest.mark.parametrize("weights, confidence, expands", [("m1", "0", True), ("m2", "0.95", False)])
def test_demo_flow_index_records_the_auto_choice_and_search_equals_result_npy(setup, tmp_path, weights, confidence,
                                                                              expands):
    """The demo's flow with the demo config's TEST.AQE.AUTO (mode all): the labeled validation split chooses
    the expansion, the test split's result.npy applies it; an index built with the same config records that
    choice and tools/search.py answers result.npy on every entry. With m1 an expansion wins (by 12 points, but
    on 10 validation queries no gain clears the default noise test, so this case uses the plain rule,
    AUTO_CONFIDENCE 0); with m2 none does."""
    out = tmp_path / "final"
    auto = ["DATASETS.ROOT", setup["data"], "OUTPUT_DIR", str(out), "TEST.AQE.AUTO", "True",
            "TEST.AQE.AUTO_CONFIDENCE", confidence]
    cfg = rh.model_cfg(setup[weights])
    cfg.merge_from_list(auto)
    model = build_eval_model(cfg)
    for name, labeled in (("DeepPatent", True), ("DeepPatentTest", False)):
        loader, num_query = build_reid_test_loader(cfg, name)
        inference_on_dataset(model, loader, ReidEvaluator(cfg, num_query, str(out), labeled=labeled))
    choice = json.load(open(out / "qe_choice.json", encoding="utf-8"))
    assert (choice["qe_k"] > 0) == expands, choice
    expected = np.load(out / "result.npy")

    index_dir, results = str(tmp_path / "index"), str(tmp_path / "results.jsonl")
    rh.run_tool("build_index.py", *MODEL, "MODEL.WEIGHTS", setup[weights], *auto, "--images", setup["database"],
                "--output", index_dir)
    recorded = json.load(open(os.path.join(index_dir, "manifest.json"), encoding="utf-8"))["retrieval"]
    assert (recorded["qe_k"], recorded["qe_alpha"], recorded["qe_mode"]) == (choice["qe_k"], choice["alpha"], "all")
    rh.run_tool("search.py", "--index", index_dir, "--images", setup["queries"], "--topk", "10", "--output", results)
    got = np.array([[r["item"] for r in json.loads(line)["results"]] for line in open(results, encoding="utf-8")])
    assert got.shape == expected.shape
    assert (got == expected).mean() == 1.0
    if expands:  # the expansion changes the answers, so the equality above covers it
        rh.run_tool("search.py", "--index", index_dir, "--images", setup["queries"], "--no-qe", "--output", results)
        plain = np.array([[r["item"] for r in json.loads(line)["results"]]
                          for line in open(results, encoding="utf-8")])
        assert (plain != expected).any()


def test_search_with_another_checkpoint_is_refused(setup, built):
    proc = rh.run_tool("search.py", "--index", built, "--images", setup["queries"], *MODEL,
                       "MODEL.WEIGHTS", setup["m2"], check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: The index") and "built with another model" in last
    assert "checkpoint (MODEL.WEIGHTS)" in last


def test_killed_build_resumes_without_reextracting_finished_shards(setup, tmp_path):
    """SIGKILL after the first shard, then the same command: finished shards stay untouched."""
    folder = os.path.join(setup["data"], "train_data", "patent_data")
    index_dir = tmp_path / "index"
    # 128 px and 2 drawings per shard make extraction slow enough to kill it mid-way.
    args = [*MODEL, "INPUT.SIZE_TEST", "[128, 128]", "MODEL.WEIGHTS", setup["m1"], "--images", folder,
            "--output", str(index_dir), "--shard-size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(rh.ROOT, "tools", "build_index.py"), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = index_dir / "shards" / "00000.npy"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (index_dir / "manifest.json").exists(), "the build finished before it could be killed"
    done = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (index_dir / "shards").glob("*.npy")}
    assert "00000.npy" in done

    proc = rh.run_tool("build_index.py", *args)
    log = proc.stdout + proc.stderr
    items = collect_images(folder)
    num_shards = (len(items) + 1) // 2
    assert f"Extracting {num_shards - len(done)} of {num_shards} shards ({len(done)} finished already)" in log
    for name, stamp in done.items():
        path = index_dir / "shards" / name
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp, f"{name} was extracted again"
    assert not list((index_dir / "shards").glob("*.tmp"))
    resumed = Index.open(str(index_dir), load_extractor=False)
    assert resumed.paths == items.paths and resumed.patents[0].startswith("USD")
    cfg = rh.model_cfg(setup["m1"])
    cfg.merge_from_list(["INPUT.SIZE_TEST", "[128, 128]"])
    fresh = Index.build(str(tmp_path / "fresh"), items, TorchExtractor(cfg), BuildOptions(shard_size=len(items)))
    np.testing.assert_allclose(resumed.features(), fresh.features(), rtol=1e-5, atol=1e-5)

    # --add with the index's own model: only the new drawings are extracted (the old shards stay as they are).
    proc = rh.run_tool("build_index.py", "--output", str(index_dir), "--add", "--images", setup["queries"])
    queries = collect_images(setup["queries"])
    assert f"Added {len(queries)} drawings" in proc.stdout + proc.stderr
    grown = Index.open(str(index_dir))
    assert grown.paths == items.paths + queries.paths
    for name, stamp in done.items():
        path = index_dir / "shards" / name
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert grown.search(queries.paths[:2], k=1)[1][0].item == len(items) + 1  # a query finds itself


def test_onnx_export_matches_pytorch_and_serves_the_index(setup, built, tmp_path):
    onnx_path = str(tmp_path / "model.onnx")
    # A tolerance nothing meets: the check must fail with a non-zero exit, after printing the difference.
    proc = rh.run_tool("export.py", *MODEL, "MODEL.WEIGHTS", setup["m1"], "--format", "onnx", "--output", onnx_path,
                       "--images", setup["queries"], "--tolerance", "1e-12", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ONNX vs PyTorch"))
    normalised_diff = float(line.split("normalised ")[1].split()[0])
    assert 0 < normalised_diff < 1e-4

    torch_index = Index.open(built)
    onnx = OnnxExtractor(onnx_path)
    queries = collect_images(setup["queries"]).paths
    np.testing.assert_allclose(onnx(queries), torch_index.extractor(queries), rtol=1e-4, atol=1e-4)
    onnx_index = Index.build(str(tmp_path / "onnx_index"), collect_images(setup["database"]), onnx,
                             BuildOptions(shard_size=5))
    assert onnx_index.manifest["extractor"]["kind"] == "onnx"
    ref = [[h.item for h in row] for row in torch_index.search(queries, k=10)]
    assert [[h.item for h in row] for row in Index.open(str(tmp_path / "onnx_index")).search(queries, k=10)] == ref

    out = str(tmp_path / "results.csv")
    vis = tmp_path / "vis"
    rh.run_tool("search.py", "--index", built, "--images", setup["queries"], "--onnx", onnx_path, "--output", out,
                "--vis", str(vis))
    assert (vis / "index.html").is_file() and len(list(vis.glob("query_*.png"))) == len(queries)
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 10 * len(queries) and set(rows[0]) == {"query", "rank", "path", "item", "patent", "score"}
    assert [int(r["item"]) for r in rows] == [i for row in ref for i in row]
