"""MODEL.BACKBONE.PRETRAIN_PATH accepts a checkpoint of this project (synthetic pretraining) and refuses a
file of another architecture instead of silently initialising almost nothing."""
import pytest
import torch
import torchvision

from fastreid.modeling import build_backbone, build_model
from fastreid.utils.checkpoint import Checkpointer

from test_checkpoint import _cfg, _randomize


def test_a_whole_model_checkpoint_initialises_the_backbone(tmp_path):
    source = _randomize(build_model(_cfg("18x", classes=7, WITH_IBN=True)))
    Checkpointer(source, str(tmp_path)).save("model_final")
    cfg = _cfg("18x", classes=3, WITH_IBN=True, PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "model_final.pth"))
    backbone = build_backbone(cfg)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key
    # The whole model: backbone from the file, heads fresh (another number of classes is fine).
    model = build_model(cfg)
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)
    assert model.heads.weight.shape[0] == 3


def test_a_file_of_another_architecture_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    cfg = _cfg("50x", PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "resnet18.pth"))
    with pytest.raises(ValueError, match="resnet18.pth.*of the backbone's"):
        build_backbone(cfg)
