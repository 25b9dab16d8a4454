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
