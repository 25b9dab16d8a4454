"""Checkpointer round trips, reference-format checkpoints, and ImageNet initialisation from local files."""
import logging
import os
from collections import OrderedDict

import pytest
import torch
import torchvision

from fastreid.config import get_cfg
from fastreid.modeling import build_backbone, build_model
from fastreid.modeling.backbones.pretrain import map_imagenet_state_dict
from fastreid.utils.checkpoint import Checkpointer, convert_reference_state_dict

torch.set_num_threads(1)


def _cfg(depth="18x", classes=5, **backbone):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.BACKBONE.FEAT_DIM = 512 if depth in ("18x", "34x") else 2048
    cfg.MODEL.HEADS.NUM_CLASSES = classes
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    for key, value in backbone.items():
        setattr(cfg.MODEL.BACKBONE, key, value)
    return cfg


def _randomize(model):
    """Non-trivial values in every parameter and BN statistic, so a failed load would show."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name or name.endswith(".p") else
                        torch.randn_like(t) * 0.1)
    return model


def _features(model, images):
    model.eval()
    with torch.no_grad():
        return model(images)


IMAGES = torch.rand(2, 3, 32, 32) * 255


def test_save_load_round_trip_with_checkpointables(tmp_path):
    model = _randomize(build_model(_cfg()))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model({"images": IMAGES, "targets": torch.tensor([0, 1])})["loss_cls"].backward()
    opt.step()
    ckpt = Checkpointer(model, str(tmp_path), optimizer=opt)
    assert not ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == ""
    path = ckpt.save("model_0003", iteration=3, extra={"best": 0.5})
    assert path == str(tmp_path / "model_0003.pth") and os.path.isfile(path)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0003.pth"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []

    fresh = build_model(_cfg())
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    ckpt2 = Checkpointer(fresh, str(tmp_path), optimizer=opt2)
    assert ckpt2.has_checkpoint() and ckpt2.get_checkpoint_file() == path
    rest = ckpt2.resume_or_load("ignored.pth", resume=True)
    assert rest == {"iteration": 3, "extra": {"best": 0.5}}
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    first = next(iter(opt.state_dict()["state"]))
    assert torch.equal(opt2.state_dict()["state"][first]["momentum_buffer"],
                       opt.state_dict()["state"][first]["momentum_buffer"])
    assert torch.equal(_features(model, IMAGES), _features(fresh, IMAGES))


def test_resume_or_load_without_last_checkpoint_loads_only_the_model(tmp_path):
    source = _randomize(build_model(_cfg()))
    Checkpointer(source, str(tmp_path / "a")).save("model_final", iteration=9)
    model = build_model(_cfg())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = Checkpointer(model, str(tmp_path / "b"), optimizer=opt)
    rest = ckpt.resume_or_load(str(tmp_path / "a" / "model_final.pth"), resume=True)
    assert rest["iteration"] == 9
    assert torch.equal(_features(model, IMAGES), _features(source, IMAGES))
    assert ckpt.load("") == {}


def test_non_main_process_does_not_write(tmp_path):
    model = build_model(_cfg())
    assert Checkpointer(model, str(tmp_path), save_to_disk=False).save("model_0001") is None
    assert list(tmp_path.iterdir()) == []


def _reference_format(model):
    """A state_dict as old reference releases wrote it: DDP prefix, old head names, pixel statistics."""
    old = OrderedDict()
    for key, value in model.state_dict().items():
        key = key.replace("heads.bottleneck.0.", "heads.bnneck.").replace("heads.weight", "heads.classifier.weight")
        old["module." + key] = value.clone()
    old["module.pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    old["module.pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return old


@pytest.mark.parametrize("wrapped,depth", [(True, "101x"), (False, "50x")])
def test_reference_checkpoint_loads_with_no_missing_keys_and_same_features(tmp_path, caplog, wrapped, depth):
    cfg = _cfg(depth, classes=4, WITH_IBN=True, WITH_NL=True)
    source = _randomize(build_model(cfg))
    state = _reference_format(source)
    assert len(state) == (834 if depth == "101x" else 416) + 2
    assert "module.heads.bnneck.weight" in state and "module.heads.classifier.weight" in state
    data = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "iteration": 41} if wrapped else state
    torch.save(data, tmp_path / "reference.pth")
    model = build_model(cfg)
    with caplog.at_level(logging.INFO, logger="fastreid.utils.checkpoint"):
        rest = Checkpointer(model).load(str(tmp_path / "reference.pth"))
    assert "Loaded all" in caplog.text and "missing" not in caplog.text
    assert rest == ({"optimizer": {"state": {}, "param_groups": []}, "iteration": 41} if wrapped else {})
    assert torch.equal(_features(model, IMAGES), _features(source, IMAGES))


def test_eval_model_without_classifier_reports_heads_weight(tmp_path, caplog):
    source = _randomize(build_model(_cfg(classes=6)))
    Checkpointer(source, str(tmp_path)).save("model_best")
    model = build_model(_cfg(classes=0))
    with caplog.at_level(logging.WARNING, logger="fastreid.utils.checkpoint"):
        Checkpointer(model).load(str(tmp_path / "model_best.pth"))
    assert "heads.weight" in caplog.text and "not in model" in caplog.text
    assert torch.equal(_features(model, IMAGES), _features(source, IMAGES))


def test_shape_mismatch_is_reported_and_the_rest_loads(tmp_path, caplog):
    source = _randomize(build_model(_cfg(classes=6)))
    Checkpointer(source, str(tmp_path)).save("model_best")
    model = build_model(_cfg(classes=3))
    before = model.heads.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="fastreid.utils.checkpoint"):
        Checkpointer(model).load(str(tmp_path / "model_best.pth"))
    assert "shape mismatch" in caplog.text and "[6, 512]" in caplog.text and "| key" in caplog.text
    assert torch.equal(model.heads.weight, before)
    assert torch.equal(_features(model, IMAGES), _features(source, IMAGES))


def test_convert_reference_state_dict_names():
    out = convert_reference_state_dict({"module.heads.bnneck.running_mean": 1, "module.pixel_std": 2,
                                        "module.heads.classifier.weight": 3, "_orig_mod.backbone.conv1.weight": 4})
    assert out == {"heads.bottleneck.0.running_mean": 1, "heads.weight": 3, "backbone.conv1.weight": 4}


def test_torchvision_resnet50_initialises_the_ibn_nl_backbone(tmp_path, caplog):
    tv = torchvision.models.resnet50(weights=None)
    tv_sd = tv.state_dict()
    torch.save(tv_sd, tmp_path / "resnet50.pth")
    cfg = _cfg("50x", WITH_IBN=True, WITH_NL=True, PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "resnet50.pth"))
    with caplog.at_level(logging.WARNING, logger="fastreid.utils.checkpoint"):
        backbone = build_backbone(cfg)
    sd = backbone.state_dict()
    # IBN split: first half of bn1 -> IN affine, second half -> BN
    assert torch.equal(sd["layer1.0.bn1.IN.weight"], tv_sd["layer1.0.bn1.weight"][:32])
    assert torch.equal(sd["layer1.0.bn1.BN.running_var"], tv_sd["layer1.0.bn1.running_var"][32:])
    assert torch.equal(sd["layer3.5.conv2.weight"], tv_sd["layer3.5.conv2.weight"])
    assert torch.equal(sd["layer4.0.bn1.weight"], tv_sd["layer4.0.bn1.weight"])
    # only the non-local blocks are missing and only the ImageNet classifier is left over
    assert "NL_2.0" in caplog.text and "NL_3.2" in caplog.text
    assert "fc." not in caplog.text and "layer1.0.bn1" not in caplog.text
    assert caplog.text.count("missing in checkpoint") == 5  # one row per non-local sub-module group


def test_ibn_release_format_loads_without_conversion(tmp_path, caplog):
    source = _randomize(build_backbone(_cfg("18x", WITH_IBN=True)))
    release = {"state_dict": OrderedDict(("module." + k, v) for k, v in source.state_dict().items())}
    release["state_dict"]["module.fc.weight"] = torch.zeros(1000, 512)
    torch.save(release, tmp_path / "resnet18_ibn_a.pth.tar")
    cfg = _cfg("18x", WITH_IBN=True, PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "resnet18_ibn_a.pth.tar"))
    with caplog.at_level(logging.INFO, logger="fastreid.utils.checkpoint"):
        backbone = build_backbone(cfg)
    assert "Loaded all" in caplog.text
    for k, v in source.state_dict().items():
        assert torch.equal(backbone.state_dict()[k], v), k


def test_map_imagenet_keeps_ibn_release_keys_and_drops_fc():
    backbone = build_backbone(_cfg("18x", WITH_IBN=True))
    mapped = map_imagenet_state_dict({"layer1.0.bn1.IN.weight": torch.ones(32), "fc.bias": torch.ones(3)}, backbone)
    assert list(mapped) == ["layer1.0.bn1.IN.weight"]


def test_missing_pretrain_path_and_offline_download_name_the_key(tmp_path, monkeypatch):
    cfg = _cfg("18x", PRETRAIN=True, PRETRAIN_PATH=str(tmp_path / "absent.pth"))
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        build_backbone(cfg)

    def offline(url, dst, progress=True):
        raise OSError("network unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    with pytest.raises(RuntimeError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        build_backbone(cfg)


def test_download_by_url_into_the_hub_cache_once(tmp_path, monkeypatch):
    tv_sd = torchvision.models.resnet18(weights=None).state_dict()
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        torch.save(tv_sd, dst)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = _cfg("18x", PRETRAIN=True)
    first = build_backbone(cfg)
    second = build_backbone(cfg)
    assert calls == ["https://download.pytorch.org/models/resnet18-5c106cde.pth"]
    assert (tmp_path / "hub" / "checkpoints" / "resnet18-5c106cde.pth").is_file()
    for model in (first, second):
        assert torch.equal(model.state_dict()["layer2.1.conv1.weight"], tv_sd["layer2.1.conv1.weight"])
    cfg.MODEL.BACKBONE.WITH_SE = True  # no released SE ResNet18: the error asks for a local file
    with pytest.raises(ValueError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        build_backbone(cfg)
