"""ResNet backbone: key names and counts, shapes, IBN split, non-local numerics, agreement with torchvision."""
import pytest
import torch
import torchvision
from torch import nn

from fastreid.config import get_cfg
from fastreid.modeling import build_backbone, build_model
from fastreid.modeling.backbones.resnet import ResNet
from fastreid.modeling.layers import IBN, FrozenBatchNorm2d, NonLocal, ibn_split, non_local_aggregate

torch.set_num_threads(1)


def _cfg(**backbone):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    for key, value in backbone.items():
        setattr(cfg.MODEL.BACKBONE, key, value)
    return cfg


def test_r101_ibn_nl_baseline_has_834_reference_keys():
    cfg = _cfg(DEPTH="101x", WITH_IBN=True, WITH_NL=True)
    cfg.MODEL.HEADS.POOL_LAYER = "GeneralizedMeanPoolingP"
    cfg.MODEL.HEADS.NUM_CLASSES = 7
    sd = build_model(cfg).state_dict()
    assert len(sd) == 834
    assert "pixel_mean" not in sd and "pixel_std" not in sd
    # Counted by hand: stem 6, 30 IBN bottlenecks x 20, 3 plain x 18, 4 downsamples x 6, 11 non-local x 13.
    backbone = [k for k in sd if k.startswith("backbone.")]
    assert len(backbone) == 6 + 30 * 20 + 3 * 18 + 4 * 6 + 11 * 13
    assert sorted(k for k in sd if k.startswith("heads.")) == sorted([
        "heads.pool_layer.p", "heads.weight", *[f"heads.bottleneck.0.{n}" for n in (
            "weight", "bias", "running_mean", "running_var", "num_batches_tracked")]])
    assert sd["heads.weight"].shape == (7, 2048)
    assert sd["heads.pool_layer.p"].shape == (1,) and float(sd["heads.pool_layer.p"]) == 3.0
    assert sorted({k.split(".")[2] for k in sd if k.startswith("backbone.NL_")}) == [str(i) for i in range(9)]
    assert {k.split(".")[1] for k in sd if k.startswith("backbone.NL_")} == {"NL_2", "NL_3"}
    assert sd["backbone.NL_3.8.g.weight"].shape == (1, 1024, 1, 1)
    assert sd["backbone.NL_3.8.W.0.weight"].shape == (1024, 1, 1, 1)
    assert sd["backbone.NL_2.1.theta.bias"].shape == (1,)
    assert sd["backbone.layer3.22.bn1.IN.weight"].shape == (128,)
    assert sd["backbone.layer3.22.bn1.BN.running_var"].shape == (128,)
    assert "backbone.layer3.22.bn1.IN.running_mean" not in sd
    assert "backbone.layer4.0.bn1.weight" in sd and "backbone.layer4.0.bn1.IN.weight" not in sd
    assert sd["backbone.layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["backbone.layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["backbone.conv1.weight"].shape == (64, 3, 7, 7)


def test_nonlocal_positions_r50_and_r101():
    r50 = ResNet("50x", with_nl=True)
    r101 = ResNet("101x", with_nl=True)
    assert r50.nl_positions == [[], [2, 3], [3, 4, 5], []]
    assert r101.nl_positions == [[], [2, 3], list(range(14, 23)), []]
    assert not any("NL" in k for k in ResNet("34x", with_nl=True).state_dict())
    # stem 6, 13 IBN bottlenecks x 20, 3 plain x 18, 4 downsamples x 6, 5 non-local x 13
    assert len(ResNet("50x", with_ibn=True, with_nl=True).state_dict()) == 6 + 13 * 20 + 3 * 18 + 4 * 6 + 5 * 13
    # basic blocks: 6 IBN x 14, 2 plain x 12, downsamples only in layers 2-4 (layer1 keeps 64 channels)
    assert len(ResNet("18x", with_ibn=True).state_dict()) == 6 + 6 * 14 + 2 * 12 + 3 * 6


@pytest.mark.parametrize("depth,channels", [("18x", 512), ("34x", 512), ("50x", 2048), ("101x", 2048)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_output_shapes(depth, channels, last_stride):
    model = build_backbone(_cfg(DEPTH=depth, LAST_STRIDE=last_stride)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 32))
    # stride 16 with last stride 1, 32 with 2
    assert out.shape == (1, channels, 64 // (16 * last_stride), 32 // (16 * last_stride))
    assert model.out_channels == channels


def test_stem_maxpool_has_no_padding_and_ceil_mode():
    model = ResNet("18x").eval()
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding, model.maxpool.ceil_mode) == (
        3, 2, 0, True)
    x = torch.randn(1, 3, 30, 30)  # conv1 -> 15x15; ceil((15-3)/2)+1 = 7, torchvision's padding 1 gives 8
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    assert stem.shape[-2:] == (7, 7)


def test_ibn_split_sizes_and_forward():
    assert ibn_split(64) == (32, 32) and ibn_split(5) == (2, 3)
    layer = IBN(6).eval()
    assert layer.IN.num_features == 3 and layer.BN.num_features == 3
    x = torch.randn(2, 6, 4, 5)
    with torch.no_grad():
        y = layer(x)
    inst = (x[:, :3] - x[:, :3].mean((2, 3), keepdim=True)) / torch.sqrt(
        x[:, :3].var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(y[:, :3], inst, atol=1e-5)
    assert torch.allclose(y[:, 3:], x[:, 3:] / (1 + 1e-5) ** 0.5, atol=1e-5)  # BN eval with fresh statistics


def test_nonlocal_is_identity_at_init_and_matches_dense_formula():
    block = NonLocal(8, width=1)
    x = torch.randn(2, 8, 3, 4)
    assert torch.equal(block(x), x)
    theta, phi, g = torch.randn(2, 3, 12), torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    dense = torch.einsum("bci,bcj->bij", theta, phi) / 12  # f = theta^T phi / N
    expected = torch.einsum("bij,bcj->bci", dense, g)
    assert torch.allclose(non_local_aggregate(theta, phi, g), expected, atol=1e-5)
    assert NonLocal(8, width=0).width == 4


def test_nonlocal_forward_equals_direct_computation():
    block = NonLocal(4, width=1).eval()
    nn.init.normal_(block.W[1].weight)
    x = torch.randn(1, 4, 2, 3)
    with torch.no_grad():
        t, p, g = (m(x).view(1, 1, 6) for m in (block.theta, block.phi, block.g))
        y = torch.zeros(1, 1, 6)
        for i in range(6):
            y[0, 0, i] = sum(t[0, 0, i] * p[0, 0, j] * g[0, 0, j] for j in range(6)) / 6
        expected = x + block.W(y.view(1, 1, 2, 3))
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_frozen_bn_stays_frozen_and_se_adds_keys():
    model = ResNet("18x", norm="FrozenBN", with_se=True)
    model.train()
    frozen = model.bn1
    assert isinstance(frozen, FrozenBatchNorm2d) and not list(frozen.parameters())
    assert sorted(frozen.state_dict()) == sorted(nn.BatchNorm2d(64).state_dict())
    frozen.running_mean.normal_()
    frozen.weight.normal_()
    x = torch.randn(2, 64, 3, 3)
    expected = (x - frozen.running_mean.view(1, -1, 1, 1)) / torch.sqrt(frozen.running_var.view(1, -1, 1, 1) + 1e-5)
    assert torch.allclose(frozen(x), expected * frozen.weight.view(1, -1, 1, 1), atol=1e-5)
    before = frozen.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.bn1.running_mean, before)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    sd = model.state_dict()
    assert sd["layer1.0.se.fc.0.weight"].shape == (4, 64) and sd["layer1.0.se.fc.2.weight"].shape == (64, 4)


def test_plain_resnet50_matches_torchvision_with_the_same_weights():
    tv = torchvision.models.resnet50(weights=None).eval()
    tv.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)  # the reference stem
    ours = ResNet("50x", last_stride=2).eval()
    report = ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    assert not report.missing_keys and not report.unexpected_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        assert torch.allclose(ours(x), ref, atol=1e-4, rtol=1e-4)


def test_unknown_depth_and_norm_name_the_key():
    with pytest.raises(ValueError, match="MODEL.BACKBONE.DEPTH"):
        build_backbone(_cfg(DEPTH="152x"))
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NORM"):
        build_backbone(_cfg(NORM="GN"))
