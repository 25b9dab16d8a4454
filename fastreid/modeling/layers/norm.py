"""Normalisation layers chosen by name (MODEL.BACKBONE.NORM, MODEL.HEADS.NORM).

All variants keep the state_dict keys of ``nn.BatchNorm2d`` (weight, bias, running_mean, running_var,
num_batches_tracked), so a checkpoint trained with one loads into another.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from fastreid.utils import comm

logger = logging.getLogger(__name__)

NORM_NAMES = ("BN", "syncBN", "FrozenBN")


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics and affine parameters never change (always in eval mode)."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        # Frozen statistics: ignore train(True) so running_mean/var are used and never updated.
        return super().train(False)


def get_norm(norm: str, num_features: int, bias_freeze: bool = False) -> nn.Module:
    """A 2-D normalisation layer over ``num_features`` channels.

    Args:
        norm: "BN", "syncBN" (synchronised over DDP ranks; plain BN without CUDA) or "FrozenBN".
        num_features: channels.
        bias_freeze: keep the bias at its initial value 0 (the re-id BN neck).
    """
    if norm == "BN":
        layer: nn.Module = nn.BatchNorm2d(num_features)
    elif norm == "syncBN":
        # torch's SyncBatchNorm only synchronises CUDA tensors and raises on CPU under gloo.
        if torch.cuda.is_available():
            layer = nn.SyncBatchNorm(num_features)
        else:
            if comm.get_world_size() > 1:
                logger.warning("syncBN requested without CUDA: using per-process BatchNorm2d")
            layer = nn.BatchNorm2d(num_features)
    elif norm == "FrozenBN":
        layer = FrozenBatchNorm2d(num_features)
    else:
        raise ValueError(f"Unknown norm {norm!r} (MODEL.BACKBONE.NORM / MODEL.HEADS.NORM); "
                         f"choose one of {', '.join(NORM_NAMES)}")
    nn.init.ones_(layer.weight)
    nn.init.zeros_(layer.bias)
    if bias_freeze:
        layer.bias.requires_grad_(False)
    return layer
