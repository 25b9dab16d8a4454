"""Global pooling layers of the embedding head (MODEL.HEADS.POOL_LAYER); each returns ``B x C x 1 x 1``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def generalized_mean(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """GeM pooling ``(mean(clamp(x, eps) ** p)) ** (1/p)`` over H, W: p=1 is average, p -> inf is max."""
    return F.adaptive_avg_pool2d(x.clamp(min=eps).pow(p), 1).pow(1.0 / p)


class GeneralizedMeanPoolingP(nn.Module):
    """GeM with a learnable exponent ``p`` (one scalar, key ``p``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return generalized_mean(x, self.p, self.eps)


class GeneralizedMeanPooling(nn.Module):
    """GeM with a fixed exponent (no parameters)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = float(p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return generalized_mean(x, self.p, self.eps)


class GlobalAvgPool(nn.Module):
    """Average over all positions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class FastGlobalAvgPool(GlobalAvgPool):
    """fast-reid's name of a faster average pooling; the same average here."""


class GlobalMaxPool(nn.Module):
    """Maximum over all positions."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, 1)


class AdaptiveAvgMaxPool(nn.Module):
    """Sum of average and max pooling."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)


POOLING_LAYERS = {cls.__name__: cls for cls in (
    GeneralizedMeanPoolingP, GeneralizedMeanPooling, GlobalAvgPool, FastGlobalAvgPool, GlobalMaxPool,
    AdaptiveAvgMaxPool)}


def build_pooling(name: str, gem_p: float = 3.0) -> nn.Module:
    """The pooling layer named ``name`` (MODEL.HEADS.POOL_LAYER); ``gem_p`` is MODEL.HEADS.GEM_P."""
    if name not in POOLING_LAYERS:
        raise ValueError(f"Unknown MODEL.HEADS.POOL_LAYER {name!r}; choose one of {', '.join(POOLING_LAYERS)}")
    return POOLING_LAYERS[name](gem_p)
