"""Classifier layers (MODEL.HEADS.CLS_LAYER): turn raw logits into the logits fed to cross-entropy.

``Linear`` receives ``feature @ weight.T``; the margin layers receive cosine similarities
``normalize(feature) @ normalize(weight).T`` in [-1, 1]. All multiply by the scale ``s``
(MODEL.HEADS.SCALE) and take the margin ``m`` (MODEL.HEADS.MARGIN). The pure functions come first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _one_hot(targets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(targets.long(), like.size(1)).to(like.dtype)


def circle_logits(cos: torch.Tensor, targets: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Circle-loss logits: s * a_p (cos - (1 - m)) for the target, s * a_n (cos - m) for the others.

    The weights a_p = max(1 + m - cos, 0) and a_n = max(cos + m, 0) are treated as constants.
    """
    alpha_p = (1 + margin - cos.detach()).clamp(min=0)
    alpha_n = (cos.detach() + margin).clamp(min=0)
    hot = _one_hot(targets, cos)
    logits = hot * alpha_p * (cos - (1 - margin)) + (1 - hot) * alpha_n * (cos - margin)
    return logits * scale


def cosface_logits(cos: torch.Tensor, targets: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """CosFace / AM-softmax logits: s * (cos - m) for the target, s * cos for the others."""
    return (cos - margin * _one_hot(targets, cos)) * scale


def arcface_logits(cos: torch.Tensor, targets: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace logits: s * cos(theta + m) for the target, s * cos for the others.

    Past theta = pi - m, where cos(theta + m) stops decreasing, the target logit is cos - m sin(m)
    instead, so the target logit stays monotone in the angle.
    """
    cos = cos.clamp(-1.0, 1.0)
    sin = (1.0 - cos.pow(2)).clamp(min=0).sqrt()
    cos_margin = cos * math.cos(margin) - sin * math.sin(margin)
    cos_margin = torch.where(cos > math.cos(math.pi - margin), cos_margin, cos - math.sin(math.pi - margin) * margin)
    hot = _one_hot(targets, cos)
    return (hot * cos_margin + (1 - hot) * cos) * scale


class Linear(nn.Module):
    """Plain softmax classifier: logits times ``s`` (1 by default)."""

    uses_cosine = False

    def __init__(self, num_classes: int, scale: float = 1.0, margin: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.s = float(scale)
        self.m = float(margin)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logits * self.s

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, scale={self.s}, margin={self.m}"


class CircleSoftmax(Linear):
    """Circle-loss classifier on cosine logits (reference: s 64, m 0.35)."""

    uses_cosine = True

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return circle_logits(logits, targets, self.s, self.m)


class CosSoftmax(Linear):
    """CosFace (additive cosine margin) classifier."""

    uses_cosine = True

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cosface_logits(logits, targets, self.s, self.m)


class ArcSoftmax(Linear):
    """ArcFace (additive angular margin) classifier."""

    uses_cosine = True

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return arcface_logits(logits, targets, self.s, self.m)


CLASSIFIER_LAYERS = {cls.__name__: cls for cls in (Linear, CircleSoftmax, CosSoftmax, ArcSoftmax)}


def build_classifier(name: str, num_classes: int, scale: float, margin: float) -> Linear:
    """The classifier layer named ``name`` (MODEL.HEADS.CLS_LAYER)."""
    if name not in CLASSIFIER_LAYERS:
        raise ValueError(f"Unknown MODEL.HEADS.CLS_LAYER {name!r}; choose one of {', '.join(CLASSIFIER_LAYERS)}")
    return CLASSIFIER_LAYERS[name](num_classes, scale, margin)
