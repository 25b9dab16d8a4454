"""Start one process per device (``--num-gpus``) or join a ``torchrun`` job, then call ``main``."""
from __future__ import annotations

import gc
import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastreid.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["launch", "find_free_port"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (for single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    - Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) this process joins the job with
      ``env://`` and runs ``main_func`` directly; the other arguments are ignored.
    - Otherwise, with ``num_gpus_per_machine * num_machines > 1`` it spawns ``num_gpus_per_machine``
      processes on this machine (with one, this process is that process), which rendezvous at ``dist_url``
      (``"auto"`` picks a free local port; single machine only); process ``i`` of machine ``machine_rank``
      has rank ``machine_rank * num_gpus_per_machine + i``. NCCL is used with CUDA, gloo without.
    - With a world size of 1 it just calls ``main_func``.
    """
    if _under_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        if world_size > 1:
            _init_group("env://", world_size, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), timeout)
        try:
            main_func(*args)
        finally:
            _destroy()
        return

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} is outside 0..{num_machines - 1} "
                         f"(--num-machines {num_machines})")
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices")
    if dist_url in (None, "", "auto"):
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on a single machine; give tcp://<host>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// rendezvous across machines needs a shared file system")
    if num_machines > 1 and urlparse(dist_url).hostname in ("127.0.0.1", "localhost"):
        logger.warning(f"--num-machines {num_machines} with --dist-url {dist_url}: only processes on this machine "
                       f"can reach it; give machine 0's address (tcp://<host of rank 0>:<port>) on every machine")
    if num_gpus_per_machine == 1:
        # One process on this machine (one per machine): it joins the job itself rather than start a child.
        _distributed_worker(0, main_func, world_size, 1, machine_rank, dist_url, tuple(args), timeout)
        return
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _init_group(dist_url: str, world_size: int, rank: int, local_rank: int, timeout: timedelta) -> None:
    os.environ["LOCAL_RANK"] = str(local_rank)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=_backend(), init_method=dist_url, world_size=world_size, rank=rank,
                            timeout=timeout)
    comm.synchronize()


def _destroy() -> None:
    """Free the process group while the interpreter is whole.

    DDP wrappers hold the group and usually sit in reference cycles (trainer <-> hooks), so without a
    collection they outlive ``destroy_process_group`` and the group's gloo threads are torn down during
    interpreter shutdown, which aborts the process (SIGABRT) after a run that otherwise succeeded.
    """
    gc.collect()
    if comm.is_dist():
        dist.destroy_process_group()


def _distributed_worker(local_rank: int, main_func: Callable[..., Any], world_size: int,
                        num_gpus_per_machine: int, machine_rank: int, dist_url: str,
                        args: Sequence[Any], timeout: timedelta) -> None:
    rank = machine_rank * num_gpus_per_machine + local_rank
    # As torchrun sets it: the processes of this machine (sizes per-process shares such as data workers).
    os.environ["LOCAL_WORLD_SIZE"] = str(num_gpus_per_machine)
    try:
        _init_group(dist_url, world_size, rank, local_rank, timeout)
    except Exception as e:
        raise RuntimeError(f"Process group initialisation failed at {dist_url} (rank {rank}): {e}") from e
    try:
        main_func(*args)
    finally:
        _destroy()
