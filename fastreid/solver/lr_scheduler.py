"""Learning-rate schedule: warmup stepped per iteration, then a per-epoch schedule after a delay.

The factor is a pure function of the iteration (``lr_factor``), so resuming only needs the
iteration; ``build_lr_scheduler`` wraps it in a ``LambdaLR`` stepped once per iteration.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from fastreid.config import CfgNode


def warmup_factor(iteration: int, warmup_iters: int, factor: float, method: str) -> float:
    """Multiplier of the warmup at ``iteration``: from ``factor`` to 1 ("linear") or ``factor`` ("constant")."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return factor * (1.0 - alpha) + alpha
    raise ValueError(f"Unknown SOLVER.WARMUP_METHOD {method!r}: use 'linear' or 'constant'")


def epoch_factor(epoch: int, sched: str, max_epoch: int, delay_epochs: int, steps: Sequence[int],
                 gamma: float, base_lr: float, eta_min_lr: float) -> float:
    """Multiplier of the per-epoch schedule at ``epoch`` (0-based).

    The schedule is held at 1 for ``delay_epochs`` epochs and then runs on ``t = epoch - delay_epochs``:
    MultiStepLR multiplies by ``gamma`` for every milestone ``<= t``; CosineAnnealingLR goes from
    ``base_lr`` to ``eta_min_lr`` over ``max_epoch - delay_epochs`` epochs.
    """
    t = epoch - delay_epochs
    if t <= 0:
        return 1.0
    if sched == "MultiStepLR":
        return gamma ** sum(1 for m in steps if m <= t)
    if sched == "CosineAnnealingLR":
        span = max(1, max_epoch - delay_epochs)
        t = min(t, span)
        eta_ratio = eta_min_lr / base_lr if base_lr > 0 else 0.0
        return eta_ratio + (1.0 - eta_ratio) * (1.0 + math.cos(math.pi * t / span)) / 2.0
    raise ValueError(f"Unknown SOLVER.SCHED {sched!r}: use 'MultiStepLR' or 'CosineAnnealingLR'")


class ScheduleFn:
    """Picklable ``iteration -> factor`` for ``LambdaLR`` (its state is saved with checkpoints)."""

    def __init__(self, iters_per_epoch: int, warmup_iters: int, warmup_factor: float, warmup_method: str,
                 sched: str, max_epoch: int, delay_epochs: int, steps: Sequence[int], gamma: float,
                 base_lr: float, eta_min_lr: float) -> None:
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.warmup_method = warmup_method
        self.sched = sched
        self.max_epoch = max_epoch
        self.delay_epochs = delay_epochs
        self.steps = list(steps)
        self.gamma = gamma
        self.base_lr = base_lr
        self.eta_min_lr = eta_min_lr
        # Fail at build time, not after the first epoch.
        self(0)
        epoch_factor(self.delay_epochs + 1, sched, max_epoch, delay_epochs, self.steps, gamma, base_lr, eta_min_lr)

    def __call__(self, iteration: int) -> float:
        epoch = iteration // self.iters_per_epoch
        return (warmup_factor(iteration, self.warmup_iters, self.warmup_factor, self.warmup_method)
                * epoch_factor(epoch, self.sched, self.max_epoch, self.delay_epochs, self.steps,
                               self.gamma, self.base_lr, self.eta_min_lr))


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> LambdaLR:
    """A ``LambdaLR`` over all parameter groups; call ``.step()`` once after every iteration.

    After ``k`` steps each group's rate is its initial rate times ``ScheduleFn(...)(k)``.
    """
    s = cfg.SOLVER
    fn = ScheduleFn(iters_per_epoch, s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD, s.SCHED,
                    s.MAX_EPOCH, s.DELAY_EPOCHS, s.STEPS, s.GAMMA, s.BASE_LR, s.ETA_MIN_LR)
    return LambdaLR(optimizer, fn)
