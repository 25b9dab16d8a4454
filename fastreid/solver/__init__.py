"""Optimizers, gradient clipping and learning-rate schedules built from the config."""
from typing import List

from fastreid.config import CfgNode

from . import lr_scheduler, optim
from .lr_scheduler import (ScheduleParams, WarmupEpochLR, build_lr_scheduler, cosine_span, epoch_lr, lr_at,
                           schedule_start_epoch, warmup_factor)
from .optim import build_optimizer, clip_gradients, get_param_groups

__all__ = ["ScheduleParams", "WarmupEpochLR", "build_lr_scheduler", "cosine_span", "epoch_lr", "lr_at",
           "schedule_start_epoch", "warmup_factor", "build_optimizer", "clip_gradients", "get_param_groups", "validate"]


def validate(cfg: CfgNode) -> List[str]:
    """Problems with the ``SOLVER.*`` values of the optimizer, gradient clipping and schedule."""
    return optim.validate(cfg) + lr_scheduler.validate(cfg)
