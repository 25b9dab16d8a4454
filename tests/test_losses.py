"""Each loss against a direct per-sample computation on a tiny batch."""
import math

import pytest
import torch

from fastreid.config import get_cfg
from fastreid.modeling import build_model
from fastreid.modeling.losses import (cosine_dist, cross_entropy_loss, euclidean_dist, pairwise_circleloss,
                                      pairwise_cosface, triplet_loss)

torch.set_num_threads(1)

torch.manual_seed(0)
EMB = torch.randn(6, 4, dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _d(i, j, norm=False):
    a, b = EMB[i], EMB[j]
    if norm:
        return float(2 - 2 * torch.dot(a, b) / (a.norm() * b.norm()))
    return float((a - b).norm())


def test_distances():
    assert torch.allclose(euclidean_dist(EMB, EMB), torch.cdist(EMB, EMB), atol=1e-6)
    cos = torch.tensor([[_d(i, j, True) for j in range(6)] for i in range(6)], dtype=torch.float64)
    assert torch.allclose(cosine_dist(EMB, EMB), cos, atol=1e-9)


def _hard_pairs(norm=False):
    pairs = []
    for i in range(6):
        pos = [_d(i, j, norm) for j in range(6) if LABELS[j] == LABELS[i] and j != i]
        neg = [_d(i, j, norm) for j in range(6) if LABELS[j] != LABELS[i]]
        pairs.append((max(pos), min(neg)))
    return pairs


def test_soft_margin_triplet_is_mean_log1p_exp_of_hardest_pairs():
    expected = sum(math.log(1 + math.exp(ap - an)) for ap, an in _hard_pairs()) / 6
    assert float(triplet_loss(EMB, LABELS, margin=0.0)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("norm", [False, True])
def test_hinge_triplet_with_hardest_pairs(norm):
    expected = sum(max(ap - an + 0.3, 0.0) for ap, an in _hard_pairs(norm)) / 6
    assert float(triplet_loss(EMB, LABELS, margin=0.3, norm_feat=norm)) == pytest.approx(expected, rel=1e-5)


def test_weighted_mining_triplet():
    total = 0.0
    for i in range(6):
        pos = [_d(i, j) for j in range(6) if LABELS[j] == LABELS[i]]  # the anchor itself counts (distance ~0)
        neg = [_d(i, j) for j in range(6) if LABELS[j] != LABELS[i]]
        ap = sum(d * math.exp(d) for d in pos) / sum(math.exp(d) for d in pos)
        an = sum(d * math.exp(-d) for d in neg) / sum(math.exp(-d) for d in neg)
        total += math.log(1 + math.exp(ap - an))
    assert float(triplet_loss(EMB, LABELS, 0.0, hard_mining=False)) == pytest.approx(total / 6, rel=1e-4)


def test_triplet_without_negatives_is_zero_with_gradient():
    emb = EMB[:2].clone().requires_grad_(True)
    loss = triplet_loss(emb, LABELS[:2], 0.3)
    loss.backward()
    assert loss.item() == 0.0 and emb.grad is not None


def _cos(i, j):
    return float(torch.dot(EMB[i], EMB[j]) / (EMB[i].norm() * EMB[j].norm()))


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def test_circle_loss_direct_formula():
    m, g = 0.25, 16.0
    total = 0.0
    for i in range(6):
        lp = [-g * max(1 + m - _cos(i, j), 0) * (_cos(i, j) - (1 - m))
              for j in range(6) if LABELS[j] == LABELS[i] and j != i]
        ln = [g * max(_cos(i, j) + m, 0) * (_cos(i, j) - m) for j in range(6) if LABELS[j] != LABELS[i]]
        total += math.log1p(math.exp(_lse(lp) + _lse(ln)))
    assert float(pairwise_circleloss(EMB, LABELS, m, g)) == pytest.approx(total / 6, rel=1e-5)


def test_cosface_loss_direct_formula():
    m, g = 0.25, 8.0
    total = 0.0
    for i in range(6):
        lp = [-g * _cos(i, j) for j in range(6) if LABELS[j] == LABELS[i] and j != i]
        ln = [g * (_cos(i, j) + m) for j in range(6) if LABELS[j] != LABELS[i]]
        total += math.log1p(math.exp(_lse(lp) + _lse(ln)))
    assert float(pairwise_cosface(EMB, LABELS, m, g)) == pytest.approx(total / 6, rel=1e-5)


LOGITS = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [1.0, 1.0, 1.0, 1.0]])
CLS = torch.tensor([0, 1, 3])


def _log_softmax(row):
    lse = _lse([float(v) for v in row])
    return [float(v) - lse for v in row]


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_label_smoothing(eps):
    total = 0.0
    for row, y in zip(LOGITS, CLS.tolist()):
        lp = _log_softmax(row)
        total -= sum(((1 - eps) if k == y else eps / 3) * lp[k] for k in range(4))
    assert float(cross_entropy_loss(LOGITS, CLS, eps)) == pytest.approx(total / 3, rel=1e-6)
    if eps == 0.0:
        assert float(cross_entropy_loss(LOGITS, CLS, 0.0)) == pytest.approx(
            float(torch.nn.functional.cross_entropy(LOGITS, CLS)), rel=1e-6)


def test_cross_entropy_adaptive_smoothing():
    alpha = 0.2
    total = 0.0
    for row, y in zip(LOGITS, CLS.tolist()):
        lp = _log_softmax(row)
        eps = alpha * math.exp(lp[y])
        total -= sum(((1 - eps) if k == y else eps / 3) * lp[k] for k in range(4))
    assert float(cross_entropy_loss(LOGITS, CLS, -1.0, alpha)) == pytest.approx(total / 3, rel=1e-6)


def test_baseline_losses_are_named_and_scaled():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")
    cfg.MODEL.LOSSES.CE.SCALE = 2.0
    cfg.MODEL.LOSSES.TRI.SCALE = 0.5
    model = build_model(cfg)
    feats = EMB.float().repeat(1, 128)
    logits = LOGITS[[0, 1, 2, 0, 1, 2]]
    out = model.losses({"features": feats, "cls_outputs": logits}, LABELS)
    assert set(out) == {"loss_cls", "loss_triplet", "loss_circle", "loss_cosface"}
    assert float(out["loss_cls"]) == pytest.approx(2.0 * float(cross_entropy_loss(logits, LABELS)), rel=1e-6)
    assert float(out["loss_triplet"]) == pytest.approx(0.5 * float(triplet_loss(feats, LABELS, 0.3)), rel=1e-6)
    c = cfg.MODEL.LOSSES
    assert float(out["loss_circle"]) == pytest.approx(
        float(pairwise_circleloss(feats, LABELS, c.CIRCLE.MARGIN, c.CIRCLE.GAMMA)), rel=1e-6)
    assert float(out["loss_cosface"]) == pytest.approx(
        float(pairwise_cosface(feats, LABELS, c.COSFACE.MARGIN, c.COSFACE.GAMMA)), rel=1e-6)
