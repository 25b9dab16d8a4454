"""Learning-rate schedule of the reference recipe: a per-iteration warmup, then a per-epoch schedule.

The numbers are those the DIRA challenge code (fast-reid) produces with its two torch schedulers:

- warmup: the rate is ``base * warmup_factor(w)`` where ``w`` counts the warmup steps taken; one is
  taken after each of the first ``WARMUP_ITERS`` iterations, except after an iteration whose update
  the AMP GradScaler skipped (the hook decides, see ``fastreid.engine.hooks.LRScheduler``);
- the per-epoch schedule starts after epoch ``schedule_start_epoch`` (never during warmup, never
  before ``DELAY_EPOCHS``) and continues from the rate the warmup left; the cosine spans
  ``MAX_EPOCH - max(ceil(WARMUP_ITERS / iters_per_epoch), DELAY_EPOCHS)`` epochs, and the eta_min
  is absolute (the same for every parameter group), as in ``torch.optim.lr_scheduler``.

``lr_at`` is the pure function; ``WarmupEpochLR`` applies it to an optimizer and keeps the two
counters (iterations done, warmup steps taken) that a checkpoint needs for an exact resume.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch

from fastreid.config import CfgNode
from fastreid.config.checks import choice_problem

# SOLVER.SCHED and SOLVER.WARMUP_METHOD values.
SCHEDULERS = ("MultiStepLR", "CosineAnnealingLR")
WARMUP_METHODS = ("linear", "constant", "exp")


def validate(cfg: CfgNode) -> List[str]:
    """Problems with the schedule's ``SOLVER.*`` values (one line each)."""
    s = cfg.SOLVER
    problems = choice_problem("SOLVER.SCHED", s.SCHED, SCHEDULERS)
    problems += choice_problem("SOLVER.WARMUP_METHOD", s.WARMUP_METHOD, WARMUP_METHODS)
    for key in ("MAX_EPOCH", "WARMUP_ITERS", "DELAY_EPOCHS"):
        if int(getattr(s, key)) < (1 if key == "MAX_EPOCH" else 0):
            problems.append(f"SOLVER.{key} must be >= {1 if key == 'MAX_EPOCH' else 0}, got {getattr(s, key)!r}")
    if any(int(b) < 0 for b in s.STEPS) or list(s.STEPS) != sorted(s.STEPS):
        problems.append(f"SOLVER.STEPS must be increasing epochs >= 0, got {list(s.STEPS)}")
    return problems


def warmup_factor(step: int, warmup_iters: int, factor: float, method: str) -> float:
    """Warmup multiplier after ``step`` warmup steps: ``factor`` at 0, 1 from ``warmup_iters`` on.

    "linear" interpolates, "constant" stays at ``factor``, "exp" is ``factor ** (1 - step / warmup_iters)``.
    """
    if step >= warmup_iters:
        return 1.0
    if method == "constant":
        return factor
    if method == "linear":
        alpha = step / warmup_iters
        return factor * (1.0 - alpha) + alpha
    if method == "exp":
        return factor ** (1.0 - step / warmup_iters)
    raise ValueError(f"Unknown SOLVER.WARMUP_METHOD {method!r}: use one of {WARMUP_METHODS}")


def schedule_start_epoch(warmup_iters: int, iters_per_epoch: int, delay_epochs: int) -> int:
    """Epoch after which the per-epoch schedule takes its first step.

    The original steps it after epoch ``e`` only once ``(e + 1) * iters_per_epoch >= WARMUP_ITERS``
    and ``e + 1 > DELAY_EPOCHS``; epoch ``e`` then runs ``max(0, e - start)`` steps into the schedule.
    """
    return max(math.ceil(warmup_iters / iters_per_epoch) - 1, delay_epochs)


def cosine_span(max_epoch: int, warmup_iters: int, iters_per_epoch: int, delay_epochs: int) -> int:
    """``T_max`` of the cosine: ``MAX_EPOCH - max(ceil(WARMUP_ITERS / iters_per_epoch), DELAY_EPOCHS)``."""
    return max_epoch - max(math.ceil(warmup_iters / iters_per_epoch), delay_epochs)


def epoch_lr(base_lr: float, start_lr: float, k: int, sched: str, span: int, steps: Sequence[int],
             gamma: float, eta_min: float) -> float:
    """Rate after ``k`` steps of the per-epoch schedule that started at ``start_lr``.

    MultiStepLR multiplies ``start_lr`` by ``gamma`` per milestone ``<= k``. CosineAnnealingLR is
    ``eta_min + (start_lr - eta_min) * (1 + cos(pi * k / span)) / 2`` for ``k <= span`` (torch's
    recursive form reduces to this); past ``span`` torch's schedule rises again from ``eta_min``
    towards ``base_lr``, which only the rate set after the very last iteration can reach.
    """
    if k <= 0:
        return start_lr
    if sched == "MultiStepLR":
        return start_lr * gamma ** sum(1 for m in steps if m <= k)
    if sched == "CosineAnnealingLR":
        if span < 1:  # only after the last epoch: the span covers every epoch the schedule runs
            return start_lr
        top = start_lr if k <= span else base_lr
        return eta_min + (top - eta_min) * (1.0 + math.cos(math.pi * k / span)) / 2.0
    raise ValueError(f"Unknown SOLVER.SCHED {sched!r}: use one of {SCHEDULERS}")


class ScheduleParams:
    """The schedule's settings (plain values, picklable), checked at construction."""

    def __init__(self, iters_per_epoch: int, warmup_iters: int, warmup_factor: float, warmup_method: str,
                 sched: str, max_epoch: int, delay_epochs: int, steps: Sequence[int], gamma: float,
                 eta_min_lr: float) -> None:
        if sched not in SCHEDULERS:
            raise ValueError(f"Unknown SOLVER.SCHED {sched!r}: use one of {SCHEDULERS}")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(f"Unknown SOLVER.WARMUP_METHOD {warmup_method!r}: use one of {WARMUP_METHODS}")
        if warmup_iters < 0 or delay_epochs < 0:
            raise ValueError(f"SOLVER.WARMUP_ITERS ({warmup_iters}) and SOLVER.DELAY_EPOCHS ({delay_epochs}) "
                             f"must be >= 0")
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method
        self.sched = sched
        self.max_epoch = int(max_epoch)
        self.delay_epochs = int(delay_epochs)
        self.steps = [int(m) for m in steps]
        self.gamma = float(gamma)
        self.eta_min_lr = float(eta_min_lr)
        self.start_epoch = schedule_start_epoch(self.warmup_iters, self.iters_per_epoch, self.delay_epochs)
        self.span = cosine_span(self.max_epoch, self.warmup_iters, self.iters_per_epoch, self.delay_epochs)


def lr_at(base_lr: float, iteration: int, warmup_steps: int, p: ScheduleParams) -> float:
    """The rate used at ``iteration`` (0-based) after ``warmup_steps`` warmup steps were taken."""
    start_lr = base_lr * warmup_factor(warmup_steps, p.warmup_iters, p.warmup_factor, p.warmup_method)
    k = max(0, iteration // p.iters_per_epoch - p.start_epoch)
    return epoch_lr(base_lr, start_lr, k, p.sched, p.span, p.steps, p.gamma, p.eta_min_lr)


class WarmupEpochLR:
    """Sets every parameter group's rate to ``lr_at(group's initial rate, ...)``.

    Call ``step()`` after every iteration (``warmup_skipped=True`` when the GradScaler skipped that
    iteration's update). ``state_dict()`` holds the two counters, so a resumed run continues exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: ScheduleParams) -> None:
        self.optimizer = optimizer
        self.params = params
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_iter = 0
        self.warmup_steps = 0
        self._apply()

    @property
    def warmup_iters(self) -> int:
        return self.params.warmup_iters

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(group["initial_lr"], self.last_iter, self.warmup_steps, self.params)

    def get_last_lr(self) -> List[float]:
        """The current rate of every group (torch scheduler interface)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, warmup_skipped: bool = False) -> None:
        """One iteration done: take a warmup step (unless skipped) while in warmup, set the next rates."""
        self.last_iter += 1
        if self.last_iter <= self.params.warmup_iters and not warmup_skipped:
            self.warmup_steps += 1
        self._apply()

    def state_dict(self) -> Dict[str, Any]:
        return {"last_iter": self.last_iter, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the counters; a per-iteration torch scheduler's state (``last_epoch``) counts as a
        run without skipped warmup steps."""
        if "last_iter" in state:
            self.last_iter, self.warmup_steps = int(state["last_iter"]), int(state["warmup_steps"])
        elif "last_epoch" in state:
            self.last_iter = int(state["last_epoch"])
            self.warmup_steps = min(self.last_iter, self.params.warmup_iters)
        else:
            raise KeyError(f"Unrecognised scheduler state with keys {sorted(state)}")
        self._apply()


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> WarmupEpochLR:
    """The recipe's schedule over all parameter groups; call ``.step()`` once after every iteration."""
    s = cfg.SOLVER
    params = ScheduleParams(iters_per_epoch, s.WARMUP_ITERS, s.WARMUP_FACTOR, s.WARMUP_METHOD, s.SCHED,
                            s.MAX_EPOCH, s.DELAY_EPOCHS, s.STEPS, s.GAMMA, s.ETA_MIN_LR)
    return WarmupEpochLR(optimizer, params)
