"""Optimizers, gradient clipping and learning-rate schedules built from the config."""
from .lr_scheduler import ScheduleFn, build_lr_scheduler, epoch_factor, warmup_factor
from .optim import build_optimizer, clip_gradients, get_param_groups

__all__ = ["ScheduleFn", "build_lr_scheduler", "epoch_factor", "warmup_factor",
           "build_optimizer", "clip_gradients", "get_param_groups"]
