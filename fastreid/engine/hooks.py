"""Hooks of the training loop: timing, LR schedule, layer freezing, precise BN, evaluation,
checkpoints and writers. Each one is a small class; the trainer only calls them."""
from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import math
import random
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from fastreid.utils import comm
from fastreid.utils.events import EventWriter

from .train_loop import HookBase

logger = logging.getLogger(__name__)

__all__ = ["IterationTimer", "LRScheduler", "LayerFreeze", "PreciseBN", "EvalHook", "PeriodicCheckpointer",
           "PeriodicWriter", "get_rng_states", "set_rng_states", "preserve_rng", "update_bn_stats"]


def get_rng_states() -> Dict[str, Any]:
    """The python, numpy, torch (and CUDA) random states of this process.

    Only tensors, numbers and tuples are used, so checkpoints stay loadable with ``weights_only=True``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what ``get_rng_states`` returned."""
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def preserve_rng() -> Iterator[None]:
    """Run a block (evaluation, precise BN) without changing the training random streams."""
    states = get_rng_states()
    try:
        yield
    finally:
        set_rng_states(states)


class IterationTimer(HookBase):
    """Records the wall time of every step as ``time`` and logs the total at the end."""

    def __init__(self) -> None:
        self._step_start = 0.0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        done = self.trainer.iter - self.trainer.start_iter
        logger.info(f"Total training time: {datetime.timedelta(seconds=int(total))} "
                    f"({done} iterations, {total / max(1, done):.4f} s / it)")


class LRScheduler(HookBase):
    """Advances the learning-rate schedule after every step and records the rate used as ``lr``.

    Schedulers with a ``warmup_iters`` attribute (``fastreid.solver.WarmupEpochLR``) get
    ``step(warmup_skipped=...)``; a fast-reid style dict ``{"warmup_sched", "lr_sched"}`` (from an
    overridden ``build_lr_scheduler``) gets the original's calls: ``warmup_sched`` after each of the
    first ``SOLVER.WARMUP_ITERS`` iterations, ``lr_sched`` after each epoch once past the warmup and
    ``SOLVER.DELAY_EPOCHS``; any other scheduler is stepped once per iteration.

    As in the original, a warmup step is skipped when the trainer's GradScaler changed its scale
    during the iteration (it halves the scale when it skips an update). Reading the scale is a host
    sync, so it is done once per iteration during the warmup only; afterwards the hook never syncs.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._scale: Optional[float] = None
        # The group with the most parameters is the representative one to print.
        self._group = max(range(len(optimizer.param_groups)),
                          key=lambda i: sum(p.numel() for p in optimizer.param_groups[i]["params"]))

    def _warmup_iters(self) -> int:
        if isinstance(self._scheduler, dict):
            return int(self.trainer.cfg.SOLVER.WARMUP_ITERS)
        return int(getattr(self._scheduler, "warmup_iters", 0))

    def _scaler(self) -> Any:
        scaler = getattr(self.trainer, "grad_scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def before_step(self) -> None:
        if self._scale is None and self.trainer.iter < self._warmup_iters() and self._scaler() is not None:
            self._scale = self._scaler().get_scale()

    def _warmup_skipped(self) -> bool:
        """Whether the GradScaler changed its scale during this iteration (one host sync)."""
        scaler = self._scaler()
        if scaler is None:
            return False
        scale = scaler.get_scale()
        skipped = self._scale is not None and scale != self._scale
        self._scale = scale
        return skipped

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("lr", self._optimizer.param_groups[self._group]["lr"], smoothing_hint=False)
        in_warmup = self.trainer.iter + 1 <= self._warmup_iters()
        skipped = in_warmup and self._warmup_skipped()
        if isinstance(self._scheduler, dict):
            if in_warmup and not skipped and "warmup_sched" in self._scheduler:
                self._scheduler["warmup_sched"].step()
        elif hasattr(self._scheduler, "warmup_iters"):
            self._scheduler.step(warmup_skipped=skipped)
        else:
            self._scheduler.step()

    def after_epoch(self) -> None:
        if isinstance(self._scheduler, dict):
            done = self.trainer.iter + 1
            if done >= self._warmup_iters() and self.trainer.epoch + 1 > int(self.trainer.cfg.SOLVER.DELAY_EPOCHS):
                self._scheduler["lr_sched"].step()


class LayerFreeze(HookBase):
    """Keeps the named top-level modules fixed during the first ``freeze_iters`` iterations.

    Frozen modules get ``requires_grad=False`` (so the optimizer skips them: no update, no weight
    decay) and are kept in eval mode (BN statistics unchanged) before every step, since evaluation
    switches the whole model back to training mode. ``on_change(frozen)`` is called when the state
    flips (the trainer re-wraps DDP with or without ``find_unused_parameters``).
    """

    def __init__(self, model: nn.Module, freeze_layers: Sequence[str], freeze_iters: int,
                 on_change: Optional[Callable[[bool], None]] = None) -> None:
        self.model = model
        self._on_change = on_change
        missing = [n for n in freeze_layers if not isinstance(getattr(model, n, None), nn.Module)]
        if missing:
            names = [n for n, _ in model.named_children()]
            raise ValueError(f"MODEL.FREEZE_LAYERS names {missing}, which are not top-level modules of the "
                             f"model; it has {names}")
        self.freeze_layers = list(freeze_layers)
        self.freeze_iters = freeze_iters
        self.is_frozen = False

    def _modules(self) -> List[nn.Module]:
        return [getattr(self.model, n) for n in self.freeze_layers]

    def freeze(self) -> None:
        for m in self._modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        if not self.is_frozen:
            logger.info(f"Freezing {self.freeze_layers} until iteration {self.freeze_iters}")
            self.is_frozen = True
            if self._on_change is not None:
                self._on_change(True)

    def unfreeze(self) -> None:
        for m in self._modules():
            m.train(self.model.training)
            for p in m.parameters():
                p.requires_grad_(True)
        logger.info(f"Unfreezing {self.freeze_layers} at iteration {self.trainer.iter}")
        self.is_frozen = False
        if self._on_change is not None:
            self._on_change(False)

    def before_step(self) -> None:
        if self.trainer.iter < self.freeze_iters:
            self.freeze()
        elif self.is_frozen:
            self.unfreeze()

    def after_train(self) -> None:
        if self.is_frozen:
            self.unfreeze()


@torch.no_grad()
def update_bn_stats(model: nn.Module, data_iter: Iterator, num_iter: int) -> None:
    """Recompute the running mean/var of every training-mode BN layer as a plain average over batches.

    The model runs forward in training mode (its output is ignored); BN momentum is set to ``None``
    (cumulative average) for the duration and restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    try:
        for batch in itertools.islice(data_iter, num_iter):
            model(batch)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m


class _EpochPeriodicHook(HookBase):
    """Calls ``_run()`` after every ``period``-th epoch (0: never) and once after a successful training."""

    period: int = 0

    def _run(self) -> None:
        raise NotImplementedError

    def after_epoch(self) -> None:
        last = self.trainer.iter + 1 >= self.trainer.max_iter
        if self.period > 0 and (self.trainer.epoch + 1) % self.period == 0 and not last:
            self._run()

    def after_train(self) -> None:
        if not self.trainer.failed:
            self._run()


class PreciseBN(_EpochPeriodicHook):
    """Before each evaluation (same period) recomputes BN statistics on ``num_iter`` training batches."""

    def __init__(self, model: nn.Module, data_loader_fn: Callable[[], Iterable], num_iter: int,
                 period_epochs: int) -> None:
        self.model = model
        self._data_loader_fn = data_loader_fn
        self._data_iter: Optional[Iterator] = None
        self.num_iter = num_iter
        self.period = period_epochs
        self._last_iter = -1

    def _run(self) -> None:
        if self._last_iter == self.trainer.iter:
            return
        self._last_iter = self.trainer.iter
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader_fn())
        logger.info(f"Running precise BN over {self.num_iter} batches")
        with preserve_rng():
            update_bn_stats(self.model, self._data_iter, self.num_iter)


def _flatten_results(results: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out.update(_flatten_results(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, np.floating, np.integer)):
            out[f"{prefix}{k}"] = float(v)
    return out


def flatten_results_dict(results: Dict[str, Any]) -> Dict[str, float]:
    """``{"set": {"mAP": x}}`` -> ``{"set/mAP": x}``, numbers only (fast-reid's name)."""
    return _flatten_results(results)


class EvalHook(_EpochPeriodicHook):
    """Evaluates every ``period`` epochs and after the last iteration.

    ``eval_function()`` returns ``{dataset_name: {metric: value}}``; the values go to the event
    storage and ``self.latest`` (read by ``PeriodicCheckpointer`` for the best model). It runs on every
    rank (the evaluator gathers features), leaves the random streams untouched, and restores training mode.
    """

    def __init__(self, period_epochs: int, eval_function: Callable[[], Dict[str, Any]],
                 model: Optional[nn.Module] = None) -> None:
        self.period = period_epochs
        self._func = eval_function
        self._model = model
        self.latest: Dict[str, Any] = {}
        self.latest_iter = -1

    def _run(self) -> None:
        if self.latest_iter == self.trainer.iter:
            return
        with preserve_rng():
            results = self._func() or {}
        if self._model is not None:
            self._model.train()
        self.latest = results
        self.latest_iter = self.trainer.iter
        flat = {k: v for k, v in _flatten_results(results).items() if math.isfinite(v)}
        if flat:
            self.trainer.storage.put_scalars(smoothing_hint=False, **flat)
        comm.synchronize()


def _score(results: Dict[str, Any]) -> Optional[float]:
    """(mAP + Rank-1) / 2 of the first labeled data set in an evaluation result, if any.

    ``results`` is ``{set name: metrics}``, or the metrics alone when one set was evaluated.
    """
    for metrics in [results, *results.values()]:
        if isinstance(metrics, dict) and "metric" in metrics:
            return float(metrics["metric"])
        if isinstance(metrics, dict) and "mAP" in metrics and "Rank-1" in metrics:
            return (float(metrics["mAP"]) + float(metrics["Rank-1"])) / 2.0
    return None


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in itertools.chain(model.parameters(), model.buffers())
               if t.is_floating_point())


class PeriodicCheckpointer(HookBase):
    """Saves ``model_XXXX`` every ``period`` epochs, ``model_best`` when the latest evaluation's
    (mAP + Rank-1)/2 improves, and ``model_final`` after a successful run.

    Checkpoints carry the number of completed iterations (``iteration``), the best score so far and
    every rank's random states, so that ``--resume`` continues exactly. Only rank 0 writes, and a model
    with non-finite weights is never saved over a good checkpoint.
    """

    def __init__(self, checkpointer: Any, model: nn.Module, period_epochs: int,
                 eval_hook: Optional[EvalHook] = None, best_metric: float = -math.inf) -> None:
        self.checkpointer = checkpointer
        self.model = model
        self.period = period_epochs
        self.eval_hook = eval_hook
        self.best_metric = best_metric
        self._best_checked_iter = -1

    def _save(self, name: str, iteration: int) -> None:
        rng = comm.all_gather(get_rng_states())
        if not comm.is_main_process():
            return
        if not _all_finite(self.model):
            logger.error(f"Not saving {name}: the model has NaN or infinite weights; keeping the last good checkpoint")
            return
        # The run's seed too, so that a resume with SEED -1 reuses it (fastreid.utils.env.resolve_seed).
        seed = getattr(getattr(self.trainer, "cfg", None), "SEED", -1)
        self.checkpointer.save(name, iteration=iteration, best_metric=self.best_metric, rng_states=rng, seed=int(seed))

    def _maybe_save_best(self, iteration: int) -> None:
        if self.eval_hook is None or self.eval_hook.latest_iter == self._best_checked_iter:
            return
        self._best_checked_iter = self.eval_hook.latest_iter
        # Evaluators may return results on rank 0 only; every rank must take the same decision.
        score = comm.all_gather(_score(self.eval_hook.latest))[0]
        if score is None:
            return
        if score > self.best_metric:
            logger.info(f"New best metric = {score:.4f} (the evaluator's 'metric', else (mAP + Rank-1)/2; previous "
                        f"{self.best_metric:.4f}) "
                        f"at iteration {iteration}")
            self.best_metric = score
            self._save("model_best", iteration)

    def after_epoch(self) -> None:
        iteration = self.trainer.iter + 1
        if self.period > 0 and (self.trainer.epoch + 1) % self.period == 0:
            self._save(f"model_{self.trainer.epoch:04d}", iteration)
        self._maybe_save_best(iteration)

    def after_train(self) -> None:
        if self.trainer.failed:
            return
        self._maybe_save_best(self.trainer.iter)
        self._save("model_final", self.trainer.iter)


class PeriodicWriter(HookBase):
    """Calls the writers every ``period`` iterations, after each epoch (evaluation results) and at the end."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        self._period = period

    def _write(self) -> None:
        for w in self._writers:
            w.write()

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            self._write()

    def after_epoch(self) -> None:
        self._write()

    def after_train(self) -> None:
        self._write()
        for w in self._writers:
            w.close()
