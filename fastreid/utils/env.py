"""Random seeds of a run: seeding every generator, and choosing the seed once so that a resume can reuse it.

``seed_all_rng`` keeps fast-reid's name. ``resolve_seed`` turns ``SEED -1`` ("any seed") into one
concrete seed that is shared by all processes, written into ``config.yaml`` and the checkpoints, and read
back on ``--resume`` so that the resumed run sees the same data order as an uninterrupted one.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
from typing import Optional

import numpy as np
import torch

from fastreid.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["seed_all_rng", "draw_seed", "recorded_seed", "resolve_seed"]


def draw_seed() -> int:
    """A fresh seed from the operating system's entropy, drawn on rank 0 and shared by all processes."""
    return int(comm.all_gather(int.from_bytes(os.urandom(4), "big") % 2 ** 31)[0])


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seed python, numpy and torch; ``None`` or a negative seed draws one. Returns the seed used."""
    if seed is None or seed < 0:
        seed = int.from_bytes(os.urandom(4), "big") % 2 ** 31
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    return seed


def recorded_seed(output_dir: str) -> Optional[int]:
    """The ``seed`` entry of the checkpoint that ``output_dir/last_checkpoint`` names, if there is one.

    The file is memory-mapped, so reading one entry of a large checkpoint costs little. Files that need
    the full unpickler (e.g. written by the original fast-reid code) never carry a seed and give None.
    """
    try:
        with open(os.path.join(output_dir, "last_checkpoint"), encoding="utf-8") as f:
            path = os.path.join(output_dir, f.read().strip())
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        logger.debug("No seed read from %s: %s", output_dir, e)
        return None
    seed = ckpt.get("seed") if isinstance(ckpt, dict) else None
    return int(seed) if seed is not None else None


def resolve_seed(seed: int, output_dir: str = "", resume: bool = False) -> int:
    """The concrete seed of a run.

    Args:
        seed: ``SEED`` of the config; a value >= 0 is used as it is.
        output_dir: the run's folder, searched for the checkpoint being resumed.
        resume: whether the run continues from ``output_dir/last_checkpoint``.
    Returns:
        ``seed`` when >= 0; else, on resume, the seed recorded in the last checkpoint; else a new seed
        shared by all processes.
    """
    if seed >= 0:
        return int(seed)
    if resume and output_dir:
        found = recorded_seed(output_dir) if comm.is_main_process() else None
        found = comm.all_gather(found)[0]
        if found is not None:
            logger.info(f"SEED -1: reusing seed {found} of the checkpoint being resumed")
            return found
        logger.warning(f"SEED -1 and no seed recorded in the checkpoint of {output_dir}: drawing a new one, so "
                       "the resumed data order differs from an uninterrupted run (set SEED to fix it)")
    return draw_seed()
