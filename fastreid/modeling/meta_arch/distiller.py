"""``Distiller``: a Baseline student trained with its usual losses plus agreement with frozen teachers.

fast-reid's knowledge-distillation meta-architecture (``KD.*``), so that its configs and projects built
on it (``projects/FastDistill``) run here. Teachers are Baselines built from their own config files and
weights; they are kept out of the module tree, so they are neither trained nor saved with the student.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.registry import META_ARCH_REGISTRY

from .baseline import LOSS_NAMES, Baseline
from .build import build_model

logger = logging.getLogger(__name__)

# Softmax temperature of the distillation loss (fast-reid's value).
TEMPERATURE = 16.0


def teacher_config(cfg, path: str):
    """The config of one teacher: ``path`` merged into the defaults, built as a plain Baseline, and synchronised
    batch norm replaced by per-process batch norm (the teacher is never wrapped by DDP)."""
    from fastreid.config import get_cfg

    cfg_t = get_cfg()
    cfg_t.merge_from_file(path)
    cfg_t.defrost()
    cfg_t.MODEL.META_ARCHITECTURE = "Baseline"
    cfg_t.MODEL.DEVICE = cfg.MODEL.DEVICE
    for node in (cfg_t.MODEL.BACKBONE, cfg_t.MODEL.HEADS):
        if node.NORM == "syncBN":
            node.NORM = "BN"
    cfg_t.freeze()
    return cfg_t


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-``t`` softmaxes, summed over classes, averaged over the batch and
    scaled by ``t ** 2`` (so that its gradient does not shrink with the temperature)."""
    return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="sum") * t * t \
        / student.shape[0]


def js_divergence(student: torch.Tensor, teacher: torch.Tensor, t: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric divergence of two logit batches: the mean of both KL directions."""
    return (kl_divergence(student, teacher, t) + kl_divergence(teacher, student, t)) / 2


def validate(cfg) -> List[str]:
    """Problems with the ``KD.*`` values of a ``Distiller`` run (none for other meta-architectures)."""
    return kd_problems(cfg) if cfg.MODEL.META_ARCHITECTURE == "Distiller" else []


def kd_problems(cfg) -> List[str]:
    """Teacher files that do not exist, unpaired configs and weights, no teacher at all, unknown loss names."""
    configs, weights = list(cfg.KD.MODEL_CONFIG), list(cfg.KD.MODEL_WEIGHTS)
    problems = [f"KD.MODEL_CONFIG entry {p} not found" for p in configs if not os.path.isfile(p)]
    problems += [f"KD.MODEL_WEIGHTS entry {p} not found" for p in weights if not os.path.isfile(p)]
    if len(configs) != len(weights):
        problems.append(f"KD.MODEL_CONFIG has {len(configs)} entries but KD.MODEL_WEIGHTS has {len(weights)}: give "
                        f"one weights file per teacher config")
    if not configs and not cfg.KD.EMA.ENABLED:
        problems.append("MODEL.META_ARCHITECTURE Distiller needs teachers: set KD.MODEL_CONFIG and KD.MODEL_WEIGHTS, "
                        "or KD.EMA.ENABLED")
    problems += [f"MODEL.LOSSES.NAME entry {n!r} is not a loss of Distiller's student; allowed: {', '.join(LOSS_NAMES)}"
                 for n in cfg.MODEL.LOSSES.NAME if n not in LOSS_NAMES]
    return problems


@META_ARCH_REGISTRY.register()
class Distiller(Baseline):
    """Student Baseline with teachers from ``KD.MODEL_CONFIG`` / ``KD.MODEL_WEIGHTS`` and, with
    ``KD.EMA.ENABLED``, a moving average of itself as the first teacher. Training adds ``loss_jsdiv``
    (the divergence of the student's class logits from each teacher's, averaged over teachers) to the
    Baseline losses; evaluation is the student alone."""

    def __init__(self, cfg) -> None:
        problems = kd_problems(cfg)  # subclasses registered under other names too
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(cfg)
        teachers: List[nn.Module] = []
        for config_file, weights_file in zip(cfg.KD.MODEL_CONFIG, cfg.KD.MODEL_WEIGHTS):
            teacher = build_model(teacher_config(cfg, config_file))
            logger.info("Loading teacher weights %s", weights_file)
            Checkpointer(teacher).load(weights_file)
            teachers.append(teacher.requires_grad_(False))
        self.ema_enabled = bool(cfg.KD.EMA.ENABLED)
        self.ema_momentum = float(cfg.KD.EMA.MOMENTUM)
        if self.ema_enabled:
            own = cfg.clone()
            own.defrost()
            own.MODEL.META_ARCHITECTURE = "Baseline"
            own.KD.EMA.ENABLED = False
            average = build_model(own).requires_grad_(False)
            average.load_state_dict(self.state_dict(), strict=False)
            teachers.insert(0, average)
        # A plain list, not a ModuleList: teachers are not parameters or state of the student.
        self.model_ts = teachers

    @torch.no_grad()
    def _momentum_update(self, momentum: float) -> None:
        """The moving-average teacher moves towards the student's current weights."""
        for own, average in zip(self.parameters(), self.model_ts[0].parameters()):
            average.mul_(momentum).add_(own.detach(), alpha=1.0 - momentum)

    def forward(self, batched_inputs: Mapping[str, Any]):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = batched_inputs["targets"].to(self.device).long()
        s_outputs = self.heads(self.backbone(images), targets)
        with torch.no_grad():
            if self.ema_enabled:
                self._momentum_update(self.ema_momentum)
            t_outputs = [t.heads(t.backbone(images), targets) for t in self.model_ts]
        return self.losses(s_outputs, t_outputs, targets)

    def losses(self, s_outputs: Dict[str, Any], t_outputs: List[Dict[str, Any]],  # type: ignore[override]
               gt_labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Baseline's losses of the student, plus ``loss_jsdiv``."""
        loss_dict = super().losses(s_outputs, gt_labels)
        s_logits = s_outputs["pred_class_logits"]
        div = sum(js_divergence(s_logits, t["pred_class_logits"].detach()) for t in t_outputs)
        loss_dict["loss_jsdiv"] = div / len(t_outputs)
        return loss_dict
