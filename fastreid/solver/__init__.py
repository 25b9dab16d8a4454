"""Optimizers, gradient clipping and learning-rate schedules built from the config."""
from .lr_scheduler import (ScheduleParams, WarmupEpochLR, build_lr_scheduler, cosine_span, epoch_lr, lr_at,
                           schedule_start_epoch, warmup_factor)
from .optim import build_optimizer, clip_gradients, get_param_groups

__all__ = ["ScheduleParams", "WarmupEpochLR", "build_lr_scheduler", "cosine_span", "epoch_lr", "lr_at",
           "schedule_start_epoch", "warmup_factor", "build_optimizer", "clip_gradients", "get_param_groups"]
