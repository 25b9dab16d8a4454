"""Continue training from a folder written by the original fast-reid code (or the DIRA challenge fork).

Its checkpoints hold ``model``, ``optimizer``, ``lr_sched``, ``warmup_sched`` (when warming up), ``epoch``
(the 0-based epoch just finished) and ``metric`` (that epoch's score), and no iteration count, random
states or grad-scaler state. Its optimizer state is laid out for fast-reid's ``ContiguousParams``: one
flat buffer per group of parameters sharing (freeze status, learning rate, weight decay), in the order
the model registers its parameters. :func:`convert_optimizer_state` splits those buffers back into one
state per parameter, so that Adam's moments (or SGD's momentum) carry over.
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from fastreid.config import CfgNode
from fastreid.config.fastreid_compat import FASTREID_DEFAULTS

logger = logging.getLogger(__name__)

__all__ = ["is_original_checkpoint", "original_start_iter", "original_param_keys", "convert_optimizer_state",
           "OriginalRunResume"]

# Module types whose parameters take WEIGHT_DECAY_NORM in fast-reid's optimizer.
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
               nn.LayerNorm, nn.LocalResponseNorm)

GroupKey = Tuple[str, float, float]


def is_original_checkpoint(extra: Mapping[str, Any]) -> bool:
    """Whether the non-model entries of a checkpoint are in the original layout (``epoch``, no ``iteration``)."""
    return "epoch" in extra and "iteration" not in extra


def original_start_iter(extra: Mapping[str, Any], iters_per_epoch: int) -> int:
    """The first iteration to run: the original resumes at the epoch after the one it saved."""
    return (int(extra["epoch"]) + 1) * iters_per_epoch


def original_param_keys(model: nn.Module, cfg: CfgNode) -> "OrderedDict[str, GroupKey]":
    """(freeze status, lr, weight decay) of every trainable parameter as fast-reid's optimizer set them.

    Biases take fast-reid's default ``SOLVER.WEIGHT_DECAY_BIAS`` (a key without effect here, so the value
    a config gave it is not known); the order is the model's registration order, as in fast-reid.
    """
    s = cfg.SOLVER
    wd_bias = float(FASTREID_DEFAULTS["SOLVER.WEIGHT_DECAY_BIAS"])
    patterns = [re.compile(n) for n in (cfg.MODEL.FREEZE_LAYERS if s.FREEZE_ITERS > 0 else [])]
    out: "OrderedDict[str, GroupKey]" = OrderedDict()
    seen = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = float(s.BASE_LR), float(s.WEIGHT_DECAY)
            if isinstance(module, _NORM_TYPES):
                wd = float(s.WEIGHT_DECAY_NORM)
            if name == "bias":
                wd = wd_bias
                if s.BIAS_LR_FACTOR != 1.0:
                    lr = float(s.BASE_LR) * s.BIAS_LR_FACTOR
            if module_name.split(".")[0] == "heads" and s.HEADS_LR_FACTOR != 1.0:
                lr *= s.HEADS_LR_FACTOR
            full = f"{module_name}.{name}"
            frozen = any(pat.match(full) for pat in patterns)
            out[full] = ("freeze" if frozen else "normal", lr, wd)
    return out


def _same_key(a: GroupKey, b: GroupKey) -> bool:
    return a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=1e-6) and math.isclose(a[2], b[2], rel_tol=1e-6)


def _assign(groups: Sequence[Mapping[str, Any]], keys: "OrderedDict[str, GroupKey]",
            problems: List[str]) -> List[List[str]]:
    """Parameter names held by each saved group, in buffer order."""
    names = list(keys)
    if len(groups) == len(names) and all(len(g["params"]) == 1 for g in groups):
        return [[n] for n in names]  # one group per parameter (fast-reid without ContiguousParams)
    pending: "OrderedDict[GroupKey, List[str]]" = OrderedDict()
    for n in names:
        pending.setdefault(keys[n], []).append(n)
    out: List[List[str]] = []
    for i, g in enumerate(groups):
        gkey = (str(g.get("freeze_status", "normal")), float(g.get("initial_lr", g["lr"])), float(g["weight_decay"]))
        match = next((k for k in pending if _same_key(k, gkey)), None)
        if match is None:
            problems.append(f"optimizer group {i} (freeze={gkey[0]}, lr={gkey[1]:g}, weight_decay={gkey[2]:g}) "
                            f"matches no parameter group of this model and config")
            out.append([])
        else:
            out.append(pending.pop(match))
    for k, left in pending.items():
        problems.append(f"{len(left)} parameters (freeze={k[0]}, lr={k[1]:g}, weight_decay={k[2]:g}, e.g. "
                        f"{left[0]}) have no optimizer group in the checkpoint")
    return out


def convert_optimizer_state(original: Mapping[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module,
                            cfg: CfgNode, order: Optional[Sequence[str]] = None
                            ) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """Our optimizer's ``state_dict`` filled with the per-parameter state split out of an original one.

    Args:
        original: the ``optimizer`` entry of the original checkpoint.
        optimizer: this run's optimizer over ``model``'s parameters.
        model: the bare model; parameter names as in its ``named_parameters``.
        cfg: this run's config (learning rates, weight decays, frozen layers decide the original groups).
        order: parameter names in the original model's registration order (the key order of the
            checkpoint's ``model`` entry); defaults to this model's order.
    Returns:
        The state dict to load (None when nothing could be carried over) and the problems found; the
        state is only returned when every saved group was matched and every size agreed.
    """
    problems: List[str] = []
    keys = original_param_keys(model, cfg)
    if order is not None:
        ranked = {n: i for i, n in enumerate(order)}
        keys = OrderedDict(sorted(keys.items(), key=lambda kv: ranked.get(kv[0], len(ranked))))
    groups = original.get("param_groups", [])
    ours_kind = {k for g in optimizer.param_groups for k in g if k in ("betas", "momentum")}
    theirs_kind = {k for g in groups for k in g if k in ("betas", "momentum")}
    if "betas" in ours_kind ^ theirs_kind:
        problems.append(f"optimizer type differs (checkpoint groups have {sorted(theirs_kind)}, this run's "
                        f"{type(optimizer).__name__} has {sorted(ours_kind)}): optimizer state not carried over")
        return None, problems
    params = dict(model.named_parameters())
    per_param: Dict[str, Dict[str, Any]] = {}
    for group, names in zip(groups, _assign(groups, keys, problems)):
        if not names:
            continue
        sizes = [params[n].numel() for n in names]
        # Each saved group holds one flat buffer (or one parameter); its state entries are split back.
        state = [original.get("state", {}).get(i, original.get("state", {}).get(str(i))) for i in group["params"]]
        flat = {}
        for st in state:
            for k, v in (st or {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    flat.setdefault(k, []).append(v.reshape(-1))
                else:
                    flat[k] = v
        for k, v in list(flat.items()):
            if isinstance(v, list):
                flat[k] = torch.cat(v)
                if flat[k].numel() != sum(sizes):
                    problems.append(f"optimizer state {k!r} of the group holding {names[0]} has {flat[k].numel()} "
                                    f"values, the parameters need {sum(sizes)}")
                    flat = {}
                    break
        if not flat:
            continue
        offset = 0
        for n, size in zip(names, sizes):
            per_param[n] = {k: (v[offset:offset + size].reshape(params[n].shape).clone()
                                if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in flat.items()}
            offset += size
    if problems:
        return None, problems
    target = optimizer.state_dict()
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    target["state"] = {index[id(params[n])]: st for n, st in per_param.items() if id(params[n]) in index}
    return target, problems


class OriginalRunResume:
    """The strategy ``DefaultTrainer.resume_or_load`` delegates to when ``OUTPUT_DIR`` holds a run of the
    original fast-reid code: the model is loaded, then the optimizer state is mapped onto this run's
    parameter groups, the LR schedule positioned, and the data stream restarted at the next epoch. What
    the original never saved (random states, the best score, the AMP scaler) is named in one warning.
    """

    def applies(self, extra: Mapping[str, Any]) -> bool:
        """Whether the checkpoint's other entries (all but the model) are the original code's."""
        return is_original_checkpoint(extra)

    def resume(self, trainer: Any, extra: Dict[str, Any], order: List[str], path: str) -> None:
        """Continue the original run in ``trainer`` (a ``DefaultTrainer`` whose model is loaded already) at the
        iteration after the checkpoint's epoch; logs each part that could not be carried over.

        Args:
            extra: the checkpoint's entries besides the model (``epoch``, ``optimizer``, schedulers).
            order: the model's parameter names in the checkpoint's order (to map optimizer state).
            path: the checkpoint file, for the log.
        """
        trainer.start_iter = min(original_start_iter(extra, trainer.epoch_iters), trainer.max_iter)
        lost = ["random states and data order (not saved by the original)",
                "best score so far (the original saves only this epoch's score: model_best.pth is decided "
                "again from the next evaluation)"]
        if "optimizer" in extra:
            state, problems = convert_optimizer_state(extra["optimizer"], trainer.optimizer, trainer.module,
                                                      trainer.cfg, order)
            if state is not None:
                trainer.optimizer.load_state_dict(state)
                logger.info(f"Optimizer state of {path} carried over ({len(state['state'])} parameters)")
            else:
                lost.append("optimizer state (" + "; ".join(problems) + ")")
        else:
            lost.append("optimizer state (not in the checkpoint)")
        lost += self.position_schedule(trainer, extra)
        if trainer.grad_scaler is not None:
            lost.append("AMP grad-scaler state (not saved by the original): the loss scale starts afresh")
        logger.warning(f"Resuming the original fast-reid run in {path} (epoch {extra['epoch']} done) at iteration "
                       f"{trainer.start_iter} of {trainer.max_iter}. Not carried over: " + "; ".join(lost))
        trainer.restart_data_at(trainer.start_iter)

    @staticmethod
    def position_schedule(trainer: Any, extra: Mapping[str, Any]) -> List[str]:
        """Set the trainer's LR schedule to the original's position; returns what could not be carried over.

        A schedule given as a dict of named schedulers (a fast-reid ``build_lr_scheduler`` override) loads
        each one the checkpoint holds.
        """
        scheduler, start_iter = trainer.scheduler, trainer.start_iter
        if isinstance(scheduler, dict):
            missing = [k for k in scheduler if k not in extra]
            for k, sched in scheduler.items():
                if k in extra:
                    sched.load_state_dict(extra[k])
            return [f"scheduler {k} (not in the checkpoint)" for k in missing]
        state = scheduler.state_dict() if hasattr(scheduler, "state_dict") else {}
        if not {"last_iter", "warmup_steps"} <= set(state):
            return [f"LR schedule position ({type(scheduler).__name__} cannot be positioned from an "
                    f"original checkpoint)"]
        taken = min(start_iter, trainer.cfg.SOLVER.WARMUP_ITERS)  # when the original kept no warmup scheduler
        warmup_steps = extra.get("warmup_sched", {}).get("last_epoch", taken)
        state.update(last_iter=start_iter, warmup_steps=int(warmup_steps))
        scheduler.load_state_dict(state)
        saved = extra.get("optimizer", {}).get("param_groups", [])
        if saved and "initial_lr" in saved[0]:
            want = saved[0]["lr"] / saved[0]["initial_lr"]
            ours = [g["lr"] / g["initial_lr"] for g in trainer.optimizer.param_groups
                    if math.isclose(g["initial_lr"], saved[0]["initial_lr"], rel_tol=1e-6)]
            if ours and not math.isclose(ours[0], want, rel_tol=1e-4):
                return [f"learning-rate factor (the original would use {want:.6g} x base at iteration "
                        f"{start_iter}, this schedule gives {ours[0]:.6g}: check SOLVER.* against the "
                        f"original run)"]
        return []
