"""Pairwise distances and same-identity masks shared by the metric losses."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors as float32 (losses under autocast need the range); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``M x N`` Euclidean distances between the rows of ``x`` and ``y`` (clamped at 1e-12 before sqrt)."""
    xx = x.pow(2).sum(dim=1, keepdim=True)
    yy = y.pow(2).sum(dim=1, keepdim=True).t()
    return (xx + yy - 2 * x @ y.t()).clamp(min=1e-12).sqrt()


def cosine_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``M x N`` cosine distances ``2 - 2 cos`` (the squared Euclidean distance of unit vectors)."""
    return 2 - 2 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()


def identity_masks(targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(same identity, different identity) boolean ``N x N`` masks; the diagonal counts as same."""
    same = targets.view(-1, 1) == targets.view(1, -1)
    return same, ~same
