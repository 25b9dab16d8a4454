"""Pooling layers, classifier layers and the embedding head against direct formulas."""
import math

import pytest
import torch

from fastreid.config import get_cfg
from fastreid.modeling import build_heads, build_model
from fastreid.modeling.layers import (AdaptiveAvgMaxPool, ArcSoftmax, CircleSoftmax, CosSoftmax,
                                      GeneralizedMeanPooling, GeneralizedMeanPoolingP, GlobalAvgPool,
                                      GlobalMaxPool, Linear)

torch.set_num_threads(1)


def test_gem_is_average_at_p1_and_tends_to_max():
    x = torch.rand(2, 3, 4, 5) * 0.9 + 0.1
    avg = x.mean(dim=(2, 3), keepdim=True)
    mx = x.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(GeneralizedMeanPooling(1.0)(x), avg, atol=1e-6)
    assert torch.allclose(GeneralizedMeanPoolingP(1.0)(x), avg, atol=1e-6)
    gaps = []
    for p in (2.0, 8.0, 64.0, 256.0):
        gap = mx - GeneralizedMeanPooling(p)(x)
        # max >= GeM >= max * N^(-1/p) over N = 20 positions
        assert bool((gap >= -1e-6).all()) and bool((gap <= mx * (1 - 20 ** (-1 / p)) + 1e-5).all())
        gaps.append(float(gap.max()))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.015
    p3 = (x.pow(3).mean(dim=(2, 3), keepdim=True)) ** (1 / 3)
    assert torch.allclose(GeneralizedMeanPoolingP(3.0)(x), p3, atol=1e-6)
    assert torch.allclose(GlobalAvgPool()(x), avg) and torch.equal(GlobalMaxPool()(x), mx)
    assert torch.allclose(AdaptiveAvgMaxPool()(x), avg + mx)
    assert float(GeneralizedMeanPooling(3.0)(torch.full((1, 1, 2, 2), -1.0))) == pytest.approx(1e-6, rel=1e-3)


def test_gem_p_is_learnable():
    pool = GeneralizedMeanPoolingP(3.0)
    pool(torch.rand(1, 2, 3, 3) + 0.1).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.shape == (1,)


COS = torch.tensor([[0.5, -0.2, 0.9], [0.1, 0.7, -0.95]])
TARGETS = torch.tensor([0, 2])


def _direct(fn):
    return torch.tensor([[fn(float(COS[i, j]), j == int(TARGETS[i])) for j in range(3)] for i in range(2)])


def test_linear_classifier_scales():
    assert torch.allclose(Linear(3, 2.0, 0.0)(COS, TARGETS), COS * 2)


def test_circle_softmax_direct_formula():
    s, m = 64.0, 0.35

    def f(c, is_target):
        if is_target:
            return s * max(1 + m - c, 0.0) * (c - (1 - m))
        return s * max(c + m, 0.0) * (c - m)
    assert torch.allclose(CircleSoftmax(3, s, m)(COS.clone(), TARGETS), _direct(f), atol=1e-4)


def test_cos_softmax_direct_formula():
    s, m = 30.0, 0.25
    assert torch.allclose(CosSoftmax(3, s, m)(COS.clone(), TARGETS),
                          _direct(lambda c, t: s * (c - m) if t else s * c), atol=1e-5)


def test_arc_softmax_direct_formula():
    s, m = 30.0, 0.5

    def f(c, is_target):
        if not is_target:
            return s * c
        theta = math.acos(c)
        return s * math.cos(theta + m) if theta + m < math.pi else s * (c - m * math.sin(m))
    assert torch.allclose(ArcSoftmax(3, s, m)(COS.clone(), TARGETS), _direct(f), atol=1e-4)


def _head_cfg(**heads):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.FEAT_DIM = 6
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    for key, value in heads.items():
        setattr(cfg.MODEL.HEADS, key, value)
    return cfg


def test_head_eval_returns_neck_feature_and_neck_bias_is_frozen():
    head = build_heads(_head_cfg(NECK_FEAT="before")).eval()
    bn = head.bottleneck[0]
    assert not bn.bias.requires_grad and bn.weight.requires_grad
    torch.nn.init.normal_(bn.weight)
    bn.running_mean.normal_()
    x = torch.randn(3, 6, 2, 2)
    pooled = x.mean(dim=(2, 3))
    expected = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    with torch.no_grad():
        assert torch.allclose(head(x), expected, atol=1e-5)


@pytest.mark.parametrize("cls_layer", ["Linear", "CircleSoftmax"])
@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_head_training_outputs(cls_layer, neck_feat):
    head = build_heads(_head_cfg(NECK_FEAT=neck_feat, CLS_LAYER=cls_layer, SCALE=2.0, MARGIN=0.1)).train()
    x = torch.randn(4, 6, 2, 2)
    targets = torch.tensor([0, 1, 2, 3])
    out = head(x, targets)
    pooled = x.mean(dim=(2, 3))
    neck = torch.nn.functional.batch_norm(pooled, None, None, training=True)
    assert torch.allclose(out["features"], pooled if neck_feat == "before" else neck, atol=1e-5)
    if cls_layer == "Linear":
        logits = neck @ head.weight.t()
    else:
        logits = torch.nn.functional.normalize(neck) @ torch.nn.functional.normalize(head.weight).t()
    assert torch.allclose(out["pred_class_logits"], logits * 2.0, atol=1e-5)
    assert torch.allclose(out["cls_outputs"], head.cls_layer(logits, targets), atol=1e-5)


def test_embedding_dim_adds_a_reduction_conv_before_the_neck():
    head = build_heads(_head_cfg(EMBEDDING_DIM=3)).eval()
    sd = head.state_dict()
    assert sd["bottleneck.0.weight"].shape == (3, 6, 1, 1) and sd["bottleneck.1.running_mean"].shape == (3,)
    assert sd["weight"].shape == (4, 3)
    assert head(torch.randn(2, 6, 2, 2)).shape == (2, 3)


def test_zero_classes_builds_for_eval_and_training_with_ce_names_the_key():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    model = build_model(cfg)
    assert "heads.weight" not in model.state_dict()
    images = torch.rand(4, 3, 32, 32) * 255
    with pytest.raises(ValueError, match="MODEL.HEADS.NUM_CLASSES"):
        model({"images": images, "targets": torch.tensor([0, 0, 1, 1])})
    model.eval()
    assert model(images).shape == (4, 512)
    cfg.MODEL.LOSSES.NAME = ("TripletLoss",)
    losses = build_model(cfg).train()({"images": images, "targets": torch.tensor([0, 0, 1, 1])})
    assert set(losses) == {"loss_triplet"}
    cfg.MODEL.HEADS.NUM_CLASSES = 2  # a classifier without classification loss is kept but not trained
    model = build_model(cfg)
    assert "heads.weight" in model.state_dict() and not model.heads.weight.requires_grad


def test_feat_dim_mismatch_and_unknown_names_are_reported():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.FEAT_DIM"):
        build_model(cfg)
    with pytest.raises(ValueError, match="MODEL.HEADS.POOL_LAYER"):
        build_heads(_head_cfg(POOL_LAYER="Median"))
    with pytest.raises(ValueError, match="MODEL.HEADS.CLS_LAYER"):
        build_heads(_head_cfg(CLS_LAYER="Softmax"))
