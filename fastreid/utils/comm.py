"""Small helpers over torch.distributed that also work without it (world size 1)."""
from __future__ import annotations

from typing import Any, Callable, List

import numpy as np
import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    """Rank within the machine (set by ``launch`` or torchrun's LOCAL_RANK)."""
    import os

    return int(os.environ.get("LOCAL_RANK", get_rank()))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(data: Any) -> List[Any]:
    """Gather any picklable object from every rank, in rank order."""
    if get_world_size() == 1:
        return [data]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data)
    return out


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Every rank's picklable ``data`` on rank ``dst`` (in rank order); an empty list on the other ranks."""
    if get_world_size() == 1:
        return [data]
    out: List[Any] = [None] * get_world_size() if get_rank() == dst else []
    dist.gather_object(data, out if get_rank() == dst else None, dst=dst)
    return out


def _on_backend(tensor: torch.Tensor, op: Callable[[torch.Tensor], Any]) -> torch.Tensor:
    """Run the collective ``op`` on ``tensor`` where the backend can (NCCL: CUDA), writing the result back in place."""
    if dist.get_backend() == "nccl" and not tensor.is_cuda:
        moved = tensor.cuda()
        op(moved)
        tensor.copy_(moved.cpu())
    else:
        op(tensor)
    return tensor


def broadcast(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s (in place; a no-op in a single process)."""
    if get_world_size() > 1:
        _on_backend(tensor, lambda t: dist.broadcast(t, src))
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (a no-op in a single process)."""
    if get_world_size() > 1:
        _on_backend(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM))
    return tensor


def get_local_size() -> int:
    """Processes on this machine (torchrun's / launch's LOCAL_WORLD_SIZE; the world size without it)."""
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", get_world_size()))


def all_gather_tensor_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0; gradients flow to the local part only.

    Every rank must pass a tensor of the same shape.
    """
    if get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[get_rank()] = x
    return torch.cat(parts, dim=0)


def shared_random_seed() -> int:
    """A random integer drawn on rank 0 and shared by all ranks."""
    seed = int(np.random.randint(2 ** 31))
    return all_gather(seed)[0]
