"""IBN-a normalisation: instance norm on the first half of the channels, batch norm on the rest."""
from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm


def ibn_split(planes: int) -> tuple:
    """(instance-norm channels, batch-norm channels) of an IBN layer over ``planes`` channels."""
    half = int(planes / 2)
    return half, planes - half


class IBN(nn.Module):
    """Instance-batch normalisation (IBN-Net, variant a); keys ``IN.*`` and ``BN.*``.

    Instance norm removes per-image contrast/style, batch norm keeps content statistics; splitting the
    channels gets both.
    """

    def __init__(self, planes: int, norm: str = "BN") -> None:
        super().__init__()
        self.half, rest = ibn_split(planes)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = get_norm(norm, rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.size(1) - self.half], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(second.contiguous())), dim=1)
