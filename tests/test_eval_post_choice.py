"""TEST.AQE.AUTO beyond expansion: DBA and k-reciprocal re-ranking are candidates, chosen only for a real
gain; the recorded choice is applied identically to the unlabeled set and to a search index."""
import json
import os

import numpy as np
import pytest
import torch

from fastreid.config import get_cfg
from fastreid.data import build_reid_test_loader
from fastreid.engine.commands import build_eval_model
from fastreid.evaluation import ReidEvaluator, inference_on_dataset
from fastreid.evaluation.pipeline import RetrievalOptions
from fastreid.evaluation.qe_tuning import QEChoice, load_choice, recorded_choice, save_choice, tune_post_processing
from fastreid.retrieval import BuildOptions, Index, build_extractor, collect_images

import retrieval_helpers as rh

BASE = RetrievalOptions(backend="torch")


def _sets(seed: int, per_id: int, noise: float = 0.9, query_noise: float = 1.2, n_ids: int = 40, dim: int = 32):
    """Identities as Gaussian clusters: one noisier query and ``per_id`` database items each. With several
    items per identity their neighbours are mostly their own (DBA and re-ranking help); with one they are not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    query = centres + query_noise * rng.normal(size=(n_ids, dim))
    g_pids = np.repeat(np.arange(n_ids), per_id)
    gallery = centres[g_pids] + noise * rng.normal(size=(len(g_pids), dim))
    return (torch.from_numpy(query.astype(np.float32)), torch.from_numpy(gallery.astype(np.float32)),
            np.arange(n_ids), g_pids)


def _cfg(out, **test):
    """Config with ``TEST`` keys given as ``AQE__AUTO=True`` (double underscore = dot)."""
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(out)
    cfg.TEST.SEARCH.BACKEND = "torch"
    for key, value in test.items():
        node, name = cfg.TEST, key.split("__")
        for part in name[:-1]:
            node = getattr(node, part)
        setattr(node, name[-1], value)
    return cfg


def _evaluate(cfg, query, gallery, q_pids, g_pids, labeled=True):
    feats = torch.cat([query, gallery])
    pids = np.concatenate([q_pids, g_pids]) if labeled else np.full(len(feats), -1)
    ev = ReidEvaluator(cfg, len(query), labeled=labeled)
    ev.process({"targets": torch.as_tensor(pids), "camids": torch.zeros(len(pids), dtype=torch.long),
                "img_paths": [f"{i}.png" for i in range(len(pids))]}, feats)
    return ev.evaluate()


def test_dba_and_reranking_that_help_are_chosen_and_scored_as_the_evaluator_scores(tmp_path):
    """Eight database items per identity: DBA (k5) and re-ranking each gain 14-16 points of mAP@10 on 40
    queries, far above their noise; each is chosen when it is the only step tuned, and every candidate's
    score is what the evaluator reports with that post-processing fixed in the config."""
    query, gallery, q_pids, g_pids = _sets(0, per_id=8)
    dba = tune_post_processing(query, gallery, q_pids, g_pids, (), (), dba_ks=(3, 5), base=BASE)
    assert [r["steps"] for r in dba.candidates] == ["none", "DBA k3", "DBA k5"]
    assert dba.candidates[dba.chosen]["steps"] == "DBA k5" and dba.candidates[2]["gain_low"] > 5
    assert dba.options["dba"] and dba.options["dba_k"] == 5 and not dba.options["rerank"] and dba.qe_k == 0
    rerank = tune_post_processing(query, gallery, q_pids, g_pids, (), (), rerank=True, base=BASE)
    assert [r["steps"] for r in rerank.candidates] == ["none", "re-rank"] and rerank.chosen == 1
    assert rerank.options["rerank"] and not rerank.options["dba"]
    both = tune_post_processing(query, gallery, q_pids, g_pids, (2, 5), (1.0,), dba_ks=(3, 5), rerank=True, base=BASE)
    steps = [r["steps"] for r in both.candidates]
    # Singles first, then the combinations of each step's best: QE k5 a1, DBA k5, re-ranking.
    assert steps[:6] == ["none", "QE k2 a1", "QE k5 a1", "DBA k3", "DBA k5", "re-rank"]
    assert set(steps[6:]) == {"DBA k5 + QE k5 a1", "DBA k5 + re-rank", "QE k5 a1 + re-rank",
                              "DBA k5 + QE k5 a1 + re-rank"}
    assert both.chosen > 0 and both.score == max(r["mAP@10"] for r in both.candidates if r["gain_low"] > 0)
    for row in both.candidates:
        fixed = _cfg(tmp_path, AQE__ENABLED=row["qe_k"] > 0, AQE__QE_K=max(row["qe_k"], 1), AQE__ALPHA=row["alpha"],
                     DBA__ENABLED=row["dba_k"] > 0, DBA__K=max(row["dba_k"], 1), RERANK__ENABLED=row["rerank"])
        res = _evaluate(fixed, query, gallery, q_pids, g_pids)
        for name in ("mAP", "mAP@10", "Rank-1"):
            assert res[name] == pytest.approx(row[name], abs=1e-9), row["steps"]


@pytest.mark.parametrize("per_id, noise", [(1, 0.9), (8, 0.01)])
def test_no_step_is_chosen_when_none_helps(per_id, noise):
    """One database item per identity (DBA and re-ranking average in other identities: both lose) and
    a perfect ranking (nothing to gain): the baseline stays, and the record says so."""
    query, gallery, q_pids, g_pids = _sets(1, per_id=per_id, noise=noise, query_noise=noise)
    choice = tune_post_processing(query, gallery, q_pids, g_pids, (2,), (1.0,), dba_ks=(3, 5), rerank=True, base=BASE)
    assert choice.chosen == 0 and choice.score == choice.baseline
    assert not choice.options["dba"] and not choice.options["rerank"] and choice.options["qe_k"] == 0
    assert all(r["gain_low"] <= 0 or r["gain"] <= 0 for r in choice.candidates)
    assert {"DBA k3", "DBA k5", "re-rank"} <= {r["steps"] for r in choice.candidates}


def test_recorded_choice_is_applied_to_the_unlabeled_set_and_old_records_still_load(tmp_path):
    """The evaluator records every post-processing field of its choice; the unlabeled set's result.npy is
    the fixed run of those fields. A record without ``options`` (written before DBA and re-ranking were
    candidates) applies its expansion only; a record naming an unknown option is refused, naming it."""
    query, gallery, q_pids, g_pids = _sets(0, per_id=8)
    cfg = _cfg(tmp_path, AQE__AUTO=True, AQE__AUTO_K=(2, 5), AQE__AUTO_ALPHA=(1.0,), AQE__AUTO_DBA_K=(3, 5),
               AQE__AUTO_RERANK=True)
    res = _evaluate(cfg, query, gallery, q_pids, g_pids)
    recorded = json.loads((tmp_path / "qe_choice.json").read_text())
    chosen = recorded["candidates"][recorded["chosen"]]
    assert recorded["options"]["dba"] == (chosen["dba_k"] > 0) and recorded["options"]["rerank"] == chosen["rerank"]
    assert res["mAP@10"] == pytest.approx(chosen["mAP@10"]) and res["noQE-mAP@10"] == recorded["baseline"]
    assert (res["DBA_K"], bool(res["RERANK"])) == (chosen["dba_k"], chosen["rerank"])
    _evaluate(cfg, query, gallery, q_pids, g_pids, labeled=False)
    o = recorded["options"]
    fixed_dir = tmp_path / "fixed"
    fixed = _cfg(fixed_dir, AQE__ENABLED=o["qe_k"] > 0, AQE__QE_K=max(o["qe_k"], 1), AQE__ALPHA=o["qe_alpha"],
                 DBA__ENABLED=o["dba"], DBA__K=o["dba_k"], RERANK__ENABLED=o["rerank"])
    _evaluate(fixed, query, gallery, q_pids, g_pids, labeled=False)
    np.testing.assert_array_equal(np.load(tmp_path / "result.npy"), np.load(fixed_dir / "result.npy"))

    old = {k: recorded[k] for k in ("qe_k", "alpha", "score", "baseline", "criterion")}
    (tmp_path / "old.json").write_text(json.dumps(dict(old, qe_k=3, alpha=2.0)))
    cfg.TEST.AQE.AUTO_FILE = str(tmp_path / "old.json")
    options = RetrievalOptions.from_config(cfg, load_choice(cfg.TEST.AQE.AUTO_FILE))
    assert (options.qe_k, options.qe_alpha, options.dba, options.rerank) == (3, 2.0, False, False)
    (tmp_path / "bad.json").write_text(json.dumps(dict(old, options={"dba": True, "dba_size": 3})))
    with pytest.raises(ValueError, match=r"bad.json.*dba_size"):
        load_choice(str(tmp_path / "bad.json"))
    bad = _cfg(tmp_path, AQE__AUTO=True, AQE__AUTO_DBA_K=(0, 3))
    with pytest.raises(ValueError, match=r"TEST.AQE.AUTO_DBA_K.*\(0, 3\)"):
        ReidEvaluator(bad, 3)


@pytest.fixture
def one_thread():
    """One intra-op thread here, as in the tool subprocesses (``rh.run_tool``): with two, the CPU convolutions of
    this process gave features a few 1e-6 away from the tool's, enough to swap near-ties of re-ranked lists
    (the test failed when run alone; in the whole suite an earlier module had set one thread)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_tiny_evaluation_and_index_apply_a_chosen_dba_and_reranking(tmp_path, one_thread):
    """End to end on real drawings (the demo config at 32 px, a fixed random model): the labeled split
    tunes DBA and re-ranking; with a choice of DBA k3 + expansion + re-ranking recorded, the test split's
    result.npy and an index built from the same config (as tools/build_index.py builds it), searched by
    tools/search.py, give the same top 10 on every entry: re-ranking depends on the query set, so the tool
    searches the queries as one set. The queries are embedded in the evaluator's batches (``--batch-size``
    as TEST.IMS_PER_BATCH): other batch sizes move CPU features in the 6th decimal, which can swap the
    near-ties of this random model's re-ranked lists."""
    data = rh.make_data(str(tmp_path / "data"), num_patents=24)
    weights = rh.make_checkpoint(str(tmp_path / "m.pth"), seed=1)
    out = tmp_path / "out"
    auto = ["DATASETS.ROOT", data, "OUTPUT_DIR", str(out), "TEST.AQE.AUTO", "True", "TEST.AQE.AUTO_DBA_K", "(3,)",
            "TEST.AQE.AUTO_RERANK", "True", "TEST.AQE.AUTO_K", "(2,)", "TEST.AQE.AUTO_ALPHA", "(1.0,)"]
    cfg = rh.model_cfg(weights)
    cfg.merge_from_list(auto)
    model = build_eval_model(cfg)
    loader, num_query = build_reid_test_loader(cfg, "DeepPatent")
    val = inference_on_dataset(model, loader, ReidEvaluator(cfg, num_query, str(out)))
    tuned = load_choice(str(out / "qe_choice.json"))
    assert {r["steps"] for r in tuned.candidates} >= {"none", "QE k2 a1", "DBA k3", "re-rank"}
    assert val["mAP@10"] == pytest.approx(tuned.score) and val["mAP@10"] >= val["noQE-mAP@10"]

    forced = RetrievalOptions.from_config(cfg, tuned).replace(dba=True, dba_k=3, qe_k=2, qe_alpha=1.0, rerank=True)
    save_choice(QEChoice(qe_k=2, alpha=1.0, score=0.0, baseline=0.0, criterion="mAP@10",
                         options=forced.post_processing, chosen=1), str(out / "qe_choice.json"), "test")
    loader, num_query = build_reid_test_loader(cfg, "DeepPatentTest")
    inference_on_dataset(model, loader, ReidEvaluator(cfg, num_query, str(out), labeled=False))
    expected = np.load(out / "result.npy")

    queries, database = rh.split_lists(data)
    index_dir, results = str(tmp_path / "index"), str(tmp_path / "results.jsonl")
    Index.build(index_dir, collect_images(database), build_extractor(cfg),
                BuildOptions.from_config(cfg, recorded_choice(cfg)))
    recorded = json.load(open(os.path.join(index_dir, "manifest.json"), encoding="utf-8"))["retrieval"]
    assert {k: recorded[k] for k in forced.post_processing} == forced.post_processing
    proc = rh.run_tool("search.py", "--index", index_dir, "--images", queries, "--topk", "10", "--output", results,
                       "--batch-size", str(cfg.TEST.IMS_PER_BATCH))
    assert "searched as one set" in proc.stderr + proc.stdout
    got = np.array([[r["item"] for r in json.loads(line)["results"]] for line in open(results, encoding="utf-8")])
    np.testing.assert_array_equal(got, expected)
