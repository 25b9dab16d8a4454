"""Squeeze-and-excitation: reweight channels by a gate computed from their global average."""
from __future__ import annotations

import torch
from torch import nn


class SELayer(nn.Module):
    """Channel gate ``x * sigmoid(W2 relu(W1 avg(x)))``; keys ``fc.0.weight`` and ``fc.2.weight``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = int(channels / reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        gate = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return x * gate
