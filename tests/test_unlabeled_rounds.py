"""Pseudo-label rounds on a tiny synthetic patent set: a real base model, real extraction, clustering, list file,
training on train + pool through ListFileDataset, evaluation; resume, refusals, and the classifier carry-over."""
import os

import numpy as np
import pytest
import torch
from torch import nn

from fastreid.config import ConfigError, get_cfg
from fastreid.data.synthetic import SyntheticSpec, generate
from fastreid.engine import default_argument_parser
from fastreid.engine.commands import train_main
from fastreid.engine.defaults import setup_cfg
from fastreid.engine.preflight import preflight
from fastreid.engine.unlabeled import carry_classifier, read_pool, unlabeled_main

TINY = """MODEL:
  DEVICE: cpu
  BACKBONE: {{DEPTH: 18x, FEAT_DIM: 512, PRETRAIN: False}}
  LOSSES: {{NAME: [CrossEntropyLoss, TripletLoss]}}
INPUT: {{SIZE_TRAIN: [32, 32], SIZE_TEST: [32, 32]}}
DATASETS: {{NAMES: [DeepPatent], TESTS: [DeepPatent], ROOT: {root}}}
DATALOADER: {{SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 2, NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 8, MAX_EPOCH: 1, MAX_ITER: 2, WARMUP_ITERS: 1, CHECKPOINT_PERIOD: 100}}
TEST: {{EVAL_PERIOD: 0, IMS_PER_BATCH: 64, SEARCH: {{BACKEND: torch}}}}
SEED: 3
"""


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("unlabeled")
    data = str(base / "data")
    generate(data, SyntheticSpec(num_patents=16, image_size=32, seed=2, min_views=3, max_views=4), workers=1)
    cfg = base / "tiny.yml"
    cfg.write_text(TINY.format(root=data))
    train_main(default_argument_parser().parse_args(["--config-file", str(cfg), "OUTPUT_DIR", str(base / "base")]))
    return base, data, str(cfg), str(base / "base" / "model_final.pth")


def _rounds(cfg, weights, out, *extra):
    # MIN_SAMPLES 1 and a wide radius: every pool drawing is clustered, whatever two iterations taught the model.
    return default_argument_parser().parse_args(
        ["--config-file", cfg, "MODEL.WEIGHTS", weights, "UNLABELED.POOL_LIST", "train_data/val_db_patent.txt",
         "UNLABELED.ROUNDS", "2", "UNLABELED.EPOCHS", "1", "UNLABELED.MIN_SAMPLES", "1", "UNLABELED.EPS", "0.9",
         "UNLABELED.K1", "4", "UNLABELED.K2", "2", "SOLVER.MAX_ITER", "0", "OUTPUT_DIR", out, *extra])


def test_rounds_cluster_the_pool_and_train_on_it(base_model):
    base, data, cfg, weights = base_model
    out = str(base / "rounds")
    results = unlabeled_main(_rounds(cfg, weights, out))
    assert 0 <= results["mAP"] <= 100  # the last round's evaluation of the one test set
    with open(os.path.join(data, "train_data", "val_db_patent.txt")) as f:
        pool = [os.path.normpath(os.path.join(data, "train_data", line.split()[0])) for line in f if line.strip()]
    with open(os.path.join(data, "train_data", "train_patent_trn.txt")) as f:
        train_ids = {line.split()[1] for line in f if line.strip()}
    previous = weights
    for r in (1, 2):
        folder = os.path.join(out, f"round{r}")
        with open(os.path.join(folder, "pseudo_labels.txt")) as f:
            lines = [line.split() for line in f if line.strip()]
        assert [p for p, _ in lines] == pool  # every drawing, in list order, absolute paths
        clusters = {int(label) for _, label in lines}
        assert clusters == set(range(len(clusters)))
        with open(os.path.join(folder, "config.yaml")) as f:
            text = f.read()
        assert "ListFileDataset" in text and os.path.join(folder, "pseudo_labels.txt") in text
        assert f"WEIGHTS: {previous}" in text
        heads = torch.load(os.path.join(folder, "model_final.pth"), weights_only=True)["model"]["heads.weight"]
        # The classifier has one row per labeled patent and per pseudo-identity of this round.
        assert heads.shape[0] == len(train_ids) + len(clusters)
        previous = os.path.join(folder, "model_final.pth")
    # A second run into the same folder is refused; --resume skips the finished rounds.
    with pytest.raises(ConfigError, match="OUTPUT_DIR .* earlier run's rounds"):
        unlabeled_main(_rounds(cfg, weights, out))
    before = os.path.getmtime(os.path.join(out, "round2", "model_final.pth"))
    args = _rounds(cfg, weights, out)
    args.resume = True
    unlabeled_main(args)
    assert os.path.getmtime(os.path.join(out, "round2", "model_final.pth")) == before


def test_bad_settings_are_refused_before_any_work(base_model, tmp_path):
    base, data, cfg, weights = base_model
    with pytest.raises(ConfigError, match="UNLABELED.EPS"):
        unlabeled_main(_rounds(cfg, weights, str(tmp_path / "a"), "UNLABELED.EPS", "1.5"))
    with pytest.raises(ConfigError, match="MODEL.WEIGHTS"):
        unlabeled_main(_rounds(cfg, str(tmp_path / "none.pth"), str(tmp_path / "b")))
    bad = tmp_path / "pool.txt"
    bad.write_text(f"{os.path.join(data, 'train_data', 'patent_data')}/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"pool.txt:1: drawing not found"):
        unlabeled_main(_rounds(cfg, weights, str(tmp_path / "c"), "UNLABELED.POOL_LIST", str(bad)))
    assert not os.path.exists(tmp_path / "c")
    with pytest.raises(ConfigError, match="UNLABELED.POOL_LIST is empty"):
        read_pool(setup_cfg(_rounds(cfg, weights, str(tmp_path / "d"), "UNLABELED.POOL_LIST", "")))


def test_carry_classifier_copies_rows_by_class_name(tmp_path):
    old = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = tmp_path / "m.pth"
    torch.save({"model": {"heads.weight": old}}, path)
    module = nn.Module()
    module.heads = nn.Module()
    module.heads.weight = nn.Parameter(torch.full((4, 4), -1.0))
    classes = {"DeepPatent_1": 0, "DeepPatent_2": 1, "ListFileDataset_0": 2, "ZZ_7": 3}
    copied = carry_classifier(module, str(path), ["DeepPatent_1", "DeepPatent_2", "ZZ_7"], classes)
    assert copied == 3
    w = module.heads.weight.detach()
    assert torch.equal(w[[0, 1, 3]], old) and torch.equal(w[2], torch.full((4,), -1.0))
    # A checkpoint whose rows do not match the names given is left alone.
    assert carry_classifier(module, str(path), ["DeepPatent_1"], classes) == 0
    np.testing.assert_array_equal(module.heads.weight.detach()[[0, 1, 3]].numpy(), old.numpy())


def test_the_preflight_reports_unlabeled_values(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path / "out"), "UNLABELED.EPS", "0.0", "UNLABELED.K1", "0"])
    errors = preflight(cfg, train=True, evaluate=True).errors
    assert any(e.startswith("UNLABELED.EPS must lie in (0, 1)") for e in errors), errors
    assert any(e.startswith("UNLABELED.K1 must be >= 1") for e in errors), errors
