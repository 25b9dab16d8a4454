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
from fastreid.evaluation.qe_tuning import gain_lower_bound, load_choice, pick, tune_query_expansion

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
    expansion helps on some draws and hurts on others; without the noise test (confidence 0) the choice
    follows any mean gain, never below the baseline."""
    enabled = []
    for seed in range(5):
        feats, pids, nq = _clusters(seed, noise=1.0, n_ids=40, per_id=2)
        choice = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 3, 5),
                                      alphas=(0.0, 2.0), confidence=0.0)
        best_expanded = max(row["mAP@10"] for row in choice.candidates[1:])
        assert choice.candidates[0]["qe_k"] == 0 and choice.baseline == choice.candidates[0]["mAP@10"]
        assert choice.score == max(choice.baseline, best_expanded) >= choice.baseline
        assert choice.enabled == (best_expanded > choice.baseline)
        enabled.append(choice.enabled)
    assert any(enabled) and not all(enabled)
    # A perfect ranking cannot be beaten: ties keep no expansion.
    feats, pids, nq = _clusters(0, noise=0.01)
    choice = tune_query_expansion(feats[:nq], feats[nq:], pids[:nq], pids[nq:], ks=(2, 5), alphas=(1.0,),
                                  confidence=0.0)
    assert choice.baseline == pytest.approx(100.0) and not choice.enabled


def test_gain_lower_bound_matches_the_normal_approximation_and_hand_cases():
    """The bootstrap bound of a mean against the textbook mean - z * sd / sqrt(n) on a large sample, and
    cases decided by hand: a constant gain is its own bound, one lucky query out of 100 is noise."""
    rng = np.random.default_rng(0)
    diff = rng.normal(2.0, 10.0, size=4000)
    normal = diff.mean() - 1.6449 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert gain_lower_bound(diff, 0.95) == pytest.approx(normal, abs=0.05)
    assert gain_lower_bound(np.full(50, 3.0), 0.99) == pytest.approx(3.0)
    assert gain_lower_bound(diff, 0.0) == pytest.approx(diff.mean())
    base = np.zeros(100)
    lucky = np.zeros(100)
    lucky[7] = 10.0  # +0.1 points on average, from one query
    steady = np.full(100, 1.0)
    steady[:5] = 0.0  # +0.95 points, from 95 queries
    assert pick([base, lucky], 0.95)[0] == 0
    assert pick([base, lucky], 0.0)[0] == 1  # the old rule (any mean gain) takes it
    best, rows = pick([base, lucky, steady], 0.95)
    assert best == 2 and rows[2]["gain"] == pytest.approx(0.95) and rows[2]["gain_low"] > 0
    assert pick([base, lucky, steady], 0.95, min_gain=1.0)[0] == 0  # a real gain, but below the threshold
    assert pick([base], 0.95) == (0, [dict(gain=0.0, gain_low=0.0)])


def test_expansion_whose_gain_is_within_noise_is_not_chosen():
    """Draws where some expansion has a higher mean mAP@10 than none on 40 weak queries: the default
    confidence keeps none unless the gain's lower bound is above zero, and the record says why."""
    refused = 0
    for seed in range(5):
        feats, pids, nq = _clusters(seed, noise=1.0, n_ids=40, per_id=2)
        args = (feats[:nq], feats[nq:], pids[:nq], pids[nq:])
        loose = tune_query_expansion(*args, ks=(2, 3, 5), alphas=(0.0, 2.0), confidence=0.0)
        strict = tune_query_expansion(*args, ks=(2, 3, 5), alphas=(0.0, 2.0))
        assert strict.confidence == 0.95 and [r["gain"] for r in strict.candidates] == pytest.approx(
            [r["mAP@10"] - strict.baseline for r in strict.candidates])
        if strict.enabled:
            row = next(r for r in strict.candidates if (r["qe_k"], r["alpha"]) == (strict.qe_k, strict.alpha))
            assert row["gain_low"] > 0
        else:
            assert all(r["gain_low"] <= 0 or r["gain"] <= 0 for r in strict.candidates)
        refused += loose.enabled and not strict.enabled
    assert refused > 0  # the noise test changed at least one decision


def test_expansion_that_helps_is_chosen_and_scores_match_a_fixed_run(tmp_path):
    """A gain well above the query-to-query noise (30 queries, 7.5 points) passes the default test."""
    feats, pids, nq = _clusters(0, noise=0.9)
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
                                     alphas=(0.0, 2.0), confidence=0.0).enabled
    cfg = _cfg(tmp_path, AUTO=True, AUTO_K=(2, 3, 5), AUTO_ALPHA=(0.0, 2.0), AUTO_CONFIDENCE=0.0)
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
