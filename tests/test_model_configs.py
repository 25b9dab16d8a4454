"""Every shipped config builds a model that trains and extracts features (tiny input, CPU)."""
import glob
import os

import pytest
import torch

from fastreid.config import get_cfg
from fastreid.modeling import build_model

torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True))


def test_configs_are_found():
    assert any(p.endswith("sbs_R101-ibn_patent_256.yml") for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_builds_trains_and_extracts(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN = False  # no downloads in tests
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    model = build_model(cfg)
    if "patent" in os.path.relpath(path, REPO) and "2stage" not in path:
        assert cfg.MODEL.BACKBONE.DEPTH == "101x"
        assert len(model.state_dict()) == 834
    images = torch.rand(4, 3, 32, 32) * 255
    losses = model.train()({"images": images, "targets": torch.tensor([0, 0, 2, 2])})
    expected = {"CrossEntropyLoss": "loss_cls", "TripletLoss": "loss_triplet", "CircleLoss": "loss_circle",
                "Cosface": "loss_cosface"}
    assert set(losses) == {expected[n] for n in cfg.MODEL.LOSSES.NAME}
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        feats = model.eval()(images)
    dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
    assert feats.shape == (4, dim)


def test_r50_ibn_nl_trains_under_bfloat16_autocast():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-SBS.yml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.BACKBONE.WITH_IBN = True
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")
    model = build_model(cfg)
    images = torch.rand(4, 3, 64, 32) * 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model({"images": images, "targets": torch.tensor([0, 0, 1, 1])})
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
