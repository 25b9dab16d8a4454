"""TEST.AQE.AUTO: query expansion is chosen on a labeled split and never lowers its criterion."""
import json
import os

import numpy as np
import pytest
import torch

from fastreid.config import get_cfg
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine.commands import evaluate
from fastreid.evaluation import ReidEvaluator
from fastreid.evaluation.qe_tuning import load_choice, tune_query_expansion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clusters(seed: int, noise: float, n_ids: int = 30, per_id: int = 5, dim: int = 16):
    """Identities as Gaussian clusters; the first image of each identity is its query."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    pids = np.repeat(np.arange(n_ids), per_id)
    feats = centres[pids] + noise * rng.normal(size=(len(pids), dim))
    is_query = np.tile(np.arange(per_id) == 0, n_ids)
    order = np.concatenate([np.flatnonzero(is_query), np.flatnonzero(~is_query)])
    return torch.from_numpy(feats[order].astype(np.float32)), pids[order], int(is_query.sum())


def _cfg(tmp_path, **aqe):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.SEARCH.BACKEND = "torch"
    for key, value in aqe.items():
        setattr(cfg.TEST.AQE, key, value)
    return cfg


def _evaluate(cfg, feats, pids, nq, labeled=True):
    ev = ReidEvaluator(cfg, nq, labeled=labeled)
    ev.process({"targets": torch.as_tensor(pids), "camids": torch.zeros(len(pids), dtype=torch.long),
                "img_paths": [f"{i}.png" for i in range(len(pids))]}, feats)
    return ev.evaluate()


def test_choice_is_never_below_no_expansion_and_falls_back_when_nothing_helps():
    """Weak features (one gallery image per identity, noise as large as the spread of identities):
    expansion helps on some draws and hurts on others; the choice follows, never below the baseline."""
    enabled = []
    for seed in range(5):
        feats, pids, nq = _clusters(seed, noise=1.0, n_ids=40, per_id=2)
        choice = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 3, 5),
                                      alphas=(0.0, 2.0))
        best_expanded = max(row["mAP@10"] for row in choice.candidates[1:])
        assert choice.candidates[0]["qe_k"] == 0 and choice.baseline == choice.candidates[0]["mAP@10"]
        assert choice.score == max(choice.baseline, best_expanded) >= choice.baseline
        assert choice.enabled == (best_expanded > choice.baseline)
        enabled.append(choice.enabled)
    assert any(enabled) and not all(enabled)
    # A perfect ranking cannot be beaten: ties keep no expansion.
    feats, pids, nq = _clusters(0, noise=0.01)
    choice = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 5), alphas=(1.0,))
    assert choice.baseline == pytest.approx(100.0) and not choice.enabled


def test_expansion_that_helps_is_chosen_and_scores_match_a_fixed_run(tmp_path):
    feats, pids, nq = _clusters(0, noise=1.6)
    choice = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 3, 5), alphas=(0.0, 2.0))
    assert choice.enabled and choice.score > choice.baseline
    assert choice.score == max(row["mAP@10"] for row in choice.candidates)
    # Every candidate's score is what the evaluator reports with that expansion fixed in the config.
    for row in choice.candidates:
        fixed = _cfg(tmp_path, ENABLED=row["qe_k"] > 0, QE_K=max(row["qe_k"], 1), ALPHA=row["alpha"])
        res = _evaluate(fixed, feats, pids, nq)
        for name in ("mAP", "mAP@10", "Rank-1"):
            assert res[name] == pytest.approx(row[name], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 3])
def test_evaluator_records_the_choice_and_applies_it_to_the_unlabeled_set(tmp_path, seed):
    feats, pids, nq = _clusters(seed, noise=1.0, n_ids=40, per_id=2)
    expect_qe = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 3, 5),
                                     alphas=(0.0, 2.0)).enabled
    cfg = _cfg(tmp_path, AUTO=True, AUTO_K=(2, 3, 5), AUTO_ALPHA=(0.0, 2.0))
    res = _evaluate(cfg, feats, pids, nq)
    recorded = json.loads((tmp_path / "qe_choice.json").read_text())
    assert (recorded["qe_k"] > 0) == expect_qe and (res["QE_K"] > 0) == expect_qe
    assert res["mAP@10"] >= res["noQE-mAP@10"]
    assert (res["mAP@10"] > res["noQE-mAP@10"]) == expect_qe
    # The unlabeled set (same features, no labels) gets exactly the fixed run of the recorded choice.
    _evaluate(cfg, feats, np.full(len(pids), -1), nq, labeled=False)
    auto_result = np.load(tmp_path / "result.npy")
    choice = load_choice(str(tmp_path / "qe_choice.json"))
    fixed_dir = tmp_path / "fixed"
    fixed = _cfg(fixed_dir, ENABLED=choice.enabled, QE_K=max(choice.qe_k, 1), ALPHA=choice.alpha)
    _evaluate(fixed, feats, np.full(len(pids), -1), nq, labeled=False)
    np.testing.assert_array_equal(auto_result, np.load(fixed_dir / "result.npy"))


def test_unlabeled_set_without_a_choice_fails_before_extraction(tmp_path):
    with pytest.raises(ValueError, match="TEST.AQE.AUTO_CRITERION.*'mAP@5'"):
        ReidEvaluator(_cfg(tmp_path, AUTO=True, AUTO_CRITERION="mAP@5"), 3, labeled=True)
    cfg = _cfg(tmp_path, AUTO=True)
    with pytest.raises(FileNotFoundError, match="qe_choice.json"):
        ReidEvaluator(cfg, 3, labeled=False)
    (tmp_path / "broken.json").write_text("{not json")
    cfg.TEST.AQE.AUTO_FILE = str(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="broken.json"):
        ReidEvaluator(cfg, 3, labeled=False)


SHIPPED_AUTO = ["configs/demo/demo_R18-ibn_64.yml", "configs/demo/demo_R18-ibn_96.yml",
                "configs/patent/sbs_R101-ibn_patent_256_synthetic.yml",
                "configs/patent/sbs_R101-ibn_patent_384_synthetic.yml",
                "configs/patent/sbs_R101-ibn_patent_test_auto.yml"]


@pytest.mark.parametrize("config", SHIPPED_AUTO)
def test_shipped_configs_choose_expansion_on_a_labeled_split_before_the_test_set(config):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    assert cfg.TEST.AQE.AUTO and cfg.TEST.AQE.AUTO_CRITERION == "mAP@10"
    tests = list(cfg.DATASETS.TESTS)
    assert tests[0] == "DeepPatent"  # the labeled validation split chooses; DeepPatentTest applies


def test_demo_config_keeps_validation_map10_at_or_above_no_expansion(tmp_path):
    """A small untrained model (the demo config at 32 px, random weights) on real synthetic drawings:
    the reported mAP@10 is the chosen expansion's and never below no expansion; the test set gets
    the recorded choice."""
    data = str(tmp_path / "data")
    generate(data, SyntheticSpec(num_patents=30, image_size=32, seed=4, min_views=3, max_views=4), workers=1)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/demo/demo_R18-ibn_64.yml"))
    cfg.merge_from_list(["DATASETS.ROOT", data, "INPUT.SIZE_TEST", "[32, 32]", "MODEL.WEIGHTS", "random",
                         "DATASETS.TESTS", '("DeepPatent", "DeepPatentTest")', "OUTPUT_DIR", str(tmp_path / "out"),
                         "DATALOADER.NUM_WORKERS", "0"])
    results = evaluate(cfg)
    val = results["DeepPatent"]
    choice = json.loads((tmp_path / "out" / "qe_choice.json").read_text())
    assert val["mAP@10"] >= val["noQE-mAP@10"]
    assert val["QE_K"] == choice["qe_k"] and (choice["qe_k"] > 0) == (val["mAP@10"] > val["noQE-mAP@10"])
    assert np.load(tmp_path / "out" / "result.npy").shape[1] == 10
