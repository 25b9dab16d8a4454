"""Metric losses under DDP: mine over the embeddings of all ranks, with the gradients of one process."""
from __future__ import annotations

from typing import Tuple

import torch

from fastreid.utils import comm


def gather_for_mining(embedding: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The global batch (embeddings and labels of all ranks, in rank order); gradients reach the local rows."""
    if comm.get_world_size() == 1:
        return embedding, targets
    return comm.all_gather_tensor_with_grad(embedding), comm.all_gather_tensor_with_grad(targets)


def ddp_gradient_scale(loss: torch.Tensor, world_size: int) -> torch.Tensor:
    """``loss`` with its value unchanged but its gradient multiplied by ``world_size``.

    Each rank computes the same loss L on the gathered batch but back-propagates only through its own
    rows, so DDP's gradient average gives (1/W) dL/dtheta; the factor W restores the single-process
    gradient. The value stays L so the logged loss is comparable.
    """
    if world_size == 1:
        return loss
    return loss * world_size - loss.detach() * (world_size - 1)


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, in rank order, without gradient (fast-reid's name)."""
    if comm.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(comm.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
