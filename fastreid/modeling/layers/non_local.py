"""Non-local block (embedded dot product, normalised by the number of positions)."""
from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm


def non_local_aggregate(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """y_i = (1/N) sum_j (theta_i . phi_j) g_j for flattened maps ``B x C' x N``; returns ``B x C' x N``.

    Evaluated as theta^T ((phi / N) g^T): the same sum without the N x N affinity matrix, so memory and
    time grow linearly with the number of positions. Dividing before the sum keeps it an average, which
    stays in float16 range under autocast.
    """
    n = theta.size(-1)
    context = torch.bmm(phi / n, g.transpose(1, 2))  # B x C' x C': mean_j phi_j g_j^T
    return torch.bmm(context.transpose(1, 2), theta)


class NonLocal(nn.Module):
    """Residual non-local block ``x + W(y)``; ``W`` ends with a zero-initialised BN so it starts as the identity.

    Keys: ``g``, ``theta``, ``phi`` (1x1 convs C -> width, with bias), ``W.0`` (1x1 conv width -> C) and
    ``W.1`` (norm). ``width`` 1 is the original re-id code's value (its checkpoints need it); the paper
    uses C/2.
    """

    def __init__(self, in_channels: int, norm: str = "BN", width: int = 1) -> None:
        super().__init__()
        self.width = width if width > 0 else in_channels // 2
        self.g = nn.Conv2d(in_channels, self.width, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, self.width, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, self.width, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(self.width, in_channels, kernel_size=1), get_norm(norm, in_channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta, phi, g = (conv(x).view(b, self.width, h * w) for conv in (self.theta, self.phi, self.g))
        y = non_local_aggregate(theta, phi, g)
        return x + self.W(y.view(b, self.width, h, w))
