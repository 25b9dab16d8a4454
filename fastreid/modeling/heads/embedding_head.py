"""Embedding head: pooling, optional 1x1 reduction, BN neck and a classifier matrix ``heads.weight``."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config.checks import choice_problem
from fastreid.utils.registry import HEAD_REGISTRY

from ..layers import build_classifier, build_pooling, get_norm
from ..layers.classifiers import CLASSIFIER_LAYERS
from ..layers.norm import NORM_NAMES
from ..layers.pooling import POOLING_LAYERS

# MODEL.HEADS.NECK_FEAT values: the feature returned before or after the BN neck.
NECK_FEATS = ("before", "after")


def validate(cfg: Any) -> List[str]:
    """Problems with the embedding head's ``MODEL.HEADS.*`` values (one line each)."""
    h = cfg.MODEL.HEADS
    return (choice_problem("MODEL.HEADS.NECK_FEAT", h.NECK_FEAT, NECK_FEATS)
            + choice_problem("MODEL.HEADS.NORM", h.NORM, NORM_NAMES)
            + choice_problem("MODEL.HEADS.POOL_LAYER", h.POOL_LAYER, list(POOLING_LAYERS))
            + choice_problem("MODEL.HEADS.CLS_LAYER", h.CLS_LAYER, list(CLASSIFIER_LAYERS)))


@HEAD_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """Turns a backbone feature map into an embedding and, in training, classification logits.

    Built from MODEL.HEADS.* with input channels MODEL.BACKBONE.FEAT_DIM.

    Keys: ``pool_layer.*`` (GeM's ``p``), ``bottleneck.{0,1}.*`` (optional 1x1 conv, then the BN neck
    with bias frozen at 0), ``weight`` (num_classes x D, absent when num_classes is 0).
    Eval mode returns the neck output ``B x D``. Training returns ``cls_outputs`` (logits after the
    classifier layer's margin and scale, None without classifier), ``pred_class_logits`` (scaled logits
    without margin, with gradient as in fast-reid: distillation losses train through them) and ``features`` (before or after the neck, for the metric losses).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        h = cfg.MODEL.HEADS
        if h.NECK_FEAT not in NECK_FEATS:
            raise ValueError(choice_problem("MODEL.HEADS.NECK_FEAT", h.NECK_FEAT, NECK_FEATS)[0])
        self.neck_feat = h.NECK_FEAT
        self.pool_layer = build_pooling(h.POOL_LAYER, h.GEM_P)
        feat_dim = cfg.MODEL.BACKBONE.FEAT_DIM
        neck = []
        if h.EMBEDDING_DIM > 0:
            neck.append(nn.Conv2d(feat_dim, h.EMBEDDING_DIM, kernel_size=1, bias=False))
            feat_dim = h.EMBEDDING_DIM
        if h.WITH_BNNECK:
            neck.append(get_norm(h.NORM, feat_dim, bias_freeze=True))
        self.bottleneck = nn.Sequential(*neck)
        self.feat_dim = feat_dim
        self.num_classes = num_classes = h.NUM_CLASSES
        if num_classes < 0:
            raise ValueError(f"MODEL.HEADS.NUM_CLASSES must be >= 0, got {num_classes}")
        self.cls_layer = build_classifier(h.CLS_LAYER, num_classes, h.SCALE, h.MARGIN)
        if num_classes > 0:
            self.weight: Optional[nn.Parameter] = nn.Parameter(torch.empty(num_classes, feat_dim))
            nn.init.normal_(self.weight, std=0.01)
        else:
            self.register_parameter("weight", None)
        for m in self.bottleneck.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, features: torch.Tensor, targets: Optional[torch.Tensor] = None):
        pool_feat = self.pool_layer(features)
        neck_feat = self.bottleneck(pool_feat)[..., 0, 0]
        if not self.training:
            return neck_feat
        out: Dict[str, Optional[torch.Tensor]] = {
            "features": neck_feat if self.neck_feat == "after" else pool_feat[..., 0, 0],
            "cls_outputs": None,
            "pred_class_logits": None,
        }
        if self.weight is not None and targets is not None:
            if self.cls_layer.uses_cosine:
                logits = F.linear(F.normalize(neck_feat), F.normalize(self.weight))
            else:
                logits = F.linear(neck_feat, self.weight)
            out["cls_outputs"] = self.cls_layer(logits, targets)
            out["pred_class_logits"] = logits * self.cls_layer.s
        return out
