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

NORM_NAMES = ("BN", "syncBN", "FrozenBN", "GhostBN")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all stored as buffers.

    Buffers rather than parameters keep it out of optimizers, SyncBN conversion and precise-BN
    recomputation, while the keys match ``nn.BatchNorm2d`` so BN checkpoints load.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def get_norm(norm: str, num_features: int, bias_freeze: bool = False) -> nn.Module:
    """A 2-D normalisation layer over ``num_features`` channels.

    Args:
        norm: "BN", "syncBN" (synchronised over DDP ranks; plain BN without CUDA), "FrozenBN", or
            "GhostBN" (fast-reid's name; with the single virtual batch a config gives it, batch norm).
        num_features: channels.
        bias_freeze: keep the bias at its initial value 0 (the re-id BN neck).
    """
    if norm in ("BN", "GhostBN"):
        # fast-reid's GhostBN normalises virtual batches; built from a config it has one, the whole batch.
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
