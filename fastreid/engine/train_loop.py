"""The training loop: a ``TrainerBase`` that only calls hooks, and ``SimpleTrainer`` for one step.

Everything optional (schedules, checkpoints, evaluation, writers, freezing) lives in hooks
(``fastreid.engine.hooks``); the loop itself never changes for a new behaviour.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from fastreid.config.checks import choice_problem
from fastreid.evaluation.evaluator import AUTOCAST_DTYPES
from fastreid.utils import comm
from fastreid.utils.events import EventStorage

logger = logging.getLogger(__name__)


class HookBase:
    """Called by the trainer at fixed points; ``self.trainer`` is set on registration (weakly)."""

    trainer: Any = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}


class TrainerBase:
    """Iterates from ``start_iter`` to ``max_iter`` and calls the hooks around every step.

    Attributes visible to hooks: ``iter`` (current 0-based iteration), ``start_iter``, ``max_iter``,
    ``iters_per_epoch``, ``epoch`` (0-based epoch of the current iteration), ``storage`` and
    ``failed`` (True once the loop raised, so that ``after_train`` hooks skip final saves).
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.iters_per_epoch = 1
        self.failed = False
        self.storage: Optional[EventStorage] = None

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order."""
        for h in hooks:
            if h is None:
                continue
            # A weak reference avoids a trainer <-> hook cycle that would keep both alive.
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    @property
    def epoch(self) -> int:
        return self.iter // self.iters_per_epoch

    def train(self, start_iter: int, max_iter: int, iters_per_epoch: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``; ``after_epoch`` runs after each epoch's last one."""
        logger.info(f"Starting training from iteration {start_iter} to {max_iter} "
                    f"({iters_per_epoch} iterations per epoch)")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.failed = False
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if (self.iter + 1) % self.iters_per_epoch == 0:
                        self.after_epoch()
                # After the loop ``iter`` counts completed iterations, as checkpoints do.
                self.iter = max_iter
            except BaseException:
                self.failed = True
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def after_epoch(self) -> None:
        for h in self._hooks:
            h.after_epoch()

    def run_step(self) -> None:
        raise NotImplementedError


def autocast_context(device_type: str, enabled: bool, dtype: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the configured dtype, or a null context when mixed precision is off."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


# SOLVER.AMP.DTYPE values: the autocast dtypes evaluation knows too.
AMP_DTYPES = tuple(AUTOCAST_DTYPES)


def validate(cfg: Any) -> List[str]:
    """Problems with ``SOLVER.AMP`` (the dtype is checked when mixed precision is on)."""
    return choice_problem("SOLVER.AMP.DTYPE", cfg.SOLVER.AMP.DTYPE, AMP_DTYPES) if cfg.SOLVER.AMP.ENABLED else []


def resolve_amp(enabled: bool, dtype: str, device_type: str) -> tuple:
    """Effective (enabled, dtype, use_grad_scaler) for a device; fp16 on CPU falls back to bf16."""
    if not enabled:
        return False, dtype, False
    if dtype not in AMP_DTYPES:
        raise ValueError(choice_problem("SOLVER.AMP.DTYPE", dtype, AMP_DTYPES)[0])
    if dtype == "float16" and device_type != "cuda":
        logger.warning("SOLVER.AMP.DTYPE float16 needs CUDA; falling back to bfloat16 autocast on CPU")
        return True, "bfloat16", False
    return True, dtype, dtype == "float16"


class SimpleTrainer(TrainerBase):
    """One step = next batch, forward (optionally under autocast), backward, optimizer step.

    The step never waits for the device: the loss values stay on it and are read (one copy, one
    gather over ranks) every ``metrics_period`` iterations, at the end of each epoch and at the last
    iteration. That read also checks them: a NaN or infinite loss raises ``FloatingPointError`` naming
    its iteration and loss terms, before that step's update and before any end-of-epoch hook
    (checkpoint, evaluation) runs. Steps between the bad iteration and the check may have updated the
    weights; the checkpointer never saves non-finite weights. Every rank takes the same decision.
    """

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 device: Optional[torch.device] = None, amp_enabled: bool = False, amp_dtype: str = "float16",
                 channels_last: bool = False, clip_fn: Optional[Callable[[Iterable[torch.Tensor]], None]] = None,
                 metrics_period: int = 20) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_iter: Optional[Any] = None
        self.optimizer = optimizer
        params = list(model.parameters())
        self.device = device or (params[0].device if params else torch.device("cpu"))
        self.amp_enabled, self.amp_dtype, use_scaler = resolve_amp(amp_enabled, amp_dtype, self.device.type)
        self.grad_scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.channels_last = channels_last
        self.clip_fn = clip_fn
        self.metrics_period = max(1, int(metrics_period))
        # (iteration, loss names, loss values on the device, data time) not yet read back.
        self._pending: List[Tuple[int, Tuple[str, ...], torch.Tensor, float]] = []

    @property
    def data_iter(self) -> Any:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        return self._data_iter

    def reset_data_loader(self, data_loader: Iterable) -> None:
        """Replace the training stream (e.g. with one that starts at the resumed iteration)."""
        self.data_loader = data_loader
        self._data_iter = None

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if k == "images" and self.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _metrics_due(self) -> bool:
        done = self.iter + 1
        return done % self.metrics_period == 0 or done % self.iters_per_epoch == 0 or done >= self.max_iter

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: the model was left in eval mode"
        start = time.perf_counter()
        data = self._to_device(next(self.data_iter))
        data_time = time.perf_counter() - start

        with autocast_context(self.device.type, self.amp_enabled, self.amp_dtype):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(v.float() for v in loss_dict.values())
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        self._pending.append((self.iter, tuple(loss_dict), values, data_time))
        if self._metrics_due():
            self.flush_metrics()

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            if self.clip_fn is not None:
                self.grad_scaler.unscale_(self.optimizer)
                self.clip_fn(self.model.parameters())
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            if self.clip_fn is not None:
                self.clip_fn(self.model.parameters())
            self.optimizer.step()

    def flush_metrics(self) -> None:
        """Read the pending loss values (one device-to-host copy), average them over ranks, stop on a
        non-finite one, and record each iteration's values in the event storage under its iteration."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flat = torch.cat([p[2] for p in pending]).cpu().tolist()
        local, pos = [], 0
        for it, names, _, data_time in pending:
            local.append((it, dict(zip(names, flat[pos:pos + len(names)])), data_time))
            pos += len(names)
        ranks = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
        storage, current = self.storage, self.storage.iter
        try:
            for rows in zip(*ranks):
                it = rows[0][0]
                bad = [(k, v, r) for r, (_, m, _) in enumerate(rows) for k, v in m.items() if not math.isfinite(v)]
                if bad:
                    terms = ", ".join(f"{k}={v} (rank {r})" for k, v, r in bad)
                    raise FloatingPointError(
                        f"Loss became infinite or NaN at iteration {it}: {terms}. Training stopped (losses are "
                        f"checked every {self.metrics_period} iterations and at epoch ends); the last good "
                        f"checkpoint in the output folder is kept.")
                storage.iter = it
                avg = {k: sum(r[1][k] for r in rows) / len(rows) for k in rows[0][1]}
                storage.put_scalar("data_time", max(r[2] for r in rows))
                storage.put_scalar("total_loss", sum(avg.values()))
                if len(avg) > 1 or "total_loss" not in avg:
                    storage.put_scalars(**avg)
        finally:
            storage.iter = current


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with mixed precision switched on (fast-reid's name for that trainer);
    the keyword arguments are ``SimpleTrainer``'s (``amp_dtype``, ``device``, ...)."""

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 **kwargs: Any) -> None:
        kwargs.pop("amp_enabled", None)
        super().__init__(model, data_loader, optimizer, amp_enabled=True, **kwargs)
