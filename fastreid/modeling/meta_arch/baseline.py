"""Baseline re-id model: normalise 0..255 images, backbone, embedding head, sum of configured losses."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from fastreid.config import configurable
from fastreid.utils import comm
from fastreid.utils.registry import META_ARCH_REGISTRY

from ..backbones import build_backbone
from ..heads import build_heads
from ..losses import (cross_entropy_loss, ddp_gradient_scale, gather_for_mining, pairwise_circleloss,
                      pairwise_cosface, triplet_loss)

LOSS_NAMES = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")


@META_ARCH_REGISTRY.register()
class Baseline(nn.Module):
    """Backbone + head. Training: ``{"images", "targets"}`` -> dict of weighted losses; eval: features ``B x D``.

    Built as ``Baseline(cfg)`` or from parts (``backbone=, heads=, pixel_mean=, pixel_std=, loss_kwargs=``),
    fast-reid's protocol: a subclass may override :meth:`from_config` (add to ``loss_kwargs``) and
    :meth:`losses` (then its loss names are its own). ``pixel_mean``/``pixel_std`` are non-persistent
    buffers: they come from the config, not checkpoints.
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, heads: nn.Module, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], loss_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"MODEL.PIXEL_MEAN ({len(pixel_mean)} values) and MODEL.PIXEL_STD ({len(pixel_std)}) "
                             f"differ in length")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.loss_kwargs: Dict[str, Any] = dict(loss_kwargs or {"loss_names": ()})
        self.loss_names = tuple(self.loss_kwargs["loss_names"])
        own_losses = type(self).losses is Baseline.losses  # a subclass with its own losses names its own
        if own_losses:
            unknown = [n for n in self.loss_names if n not in LOSS_NAMES]
            if unknown:
                raise ValueError(f"Unknown MODEL.LOSSES.NAME entries {unknown}; choose from {', '.join(LOSS_NAMES)}")
        classifier = getattr(self.heads, "weight", None)
        if own_losses and "CrossEntropyLoss" not in self.loss_names and isinstance(classifier, nn.Parameter):
            # Kept for checkpoint compatibility but unused: DDP would stop on a parameter without gradient.
            classifier.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        """The parts and loss settings of ``cfg`` (fast-reid's keyword names)."""
        backbone = build_backbone(cfg)
        out_channels = getattr(backbone, "out_channels", cfg.MODEL.BACKBONE.FEAT_DIM)
        if out_channels != cfg.MODEL.BACKBONE.FEAT_DIM:
            raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but the "
                             f"{cfg.MODEL.BACKBONE.DEPTH} backbone outputs {out_channels} channels: set it to "
                             f"{out_channels}")
        c = cfg.MODEL.LOSSES
        return {
            "backbone": backbone,
            "heads": build_heads(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loss_kwargs": {
                "loss_names": tuple(c.NAME),
                "ce": {"eps": c.CE.EPSILON, "alpha": c.CE.ALPHA, "scale": c.CE.SCALE},
                "tri": {"margin": c.TRI.MARGIN, "norm_feat": c.TRI.NORM_FEAT, "hard_mining": c.TRI.HARD_MINING,
                        "scale": c.TRI.SCALE},
                "circle": {"margin": c.CIRCLE.MARGIN, "gamma": c.CIRCLE.GAMMA, "scale": c.CIRCLE.SCALE},
                "cosface": {"margin": c.COSFACE.MARGIN, "gamma": c.COSFACE.GAMMA, "scale": c.COSFACE.SCALE},
            },
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: Union[Mapping[str, Any], torch.Tensor]) -> torch.Tensor:
        """Normalised images on the model's device, from a batch dict or a bare ``B x 3 x H x W`` tensor."""
        images = batched_inputs["images"] if isinstance(batched_inputs, Mapping) else batched_inputs
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected images as a tensor, got {type(images).__name__}")
        images = images.to(self.device, non_blocking=True).float()
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: Union[Mapping[str, Any], torch.Tensor]):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images)
        if not self.training:
            return self.heads(features)
        if not isinstance(batched_inputs, Mapping) or "targets" not in batched_inputs:
            raise ValueError("training needs a batch dict with 'targets' (call model.eval() to extract features)")
        targets = batched_inputs["targets"].to(self.device)
        if type(self).losses is not Baseline.losses:  # a project's own losses get the targets as loaded
            return self.losses(self.heads(features, targets), targets)
        targets = targets.long()
        use_classifier = "CrossEntropyLoss" in self.loss_names
        if use_classifier and getattr(self.heads, "weight", None) is None:
            raise ValueError("MODEL.HEADS.NUM_CLASSES is 0, so the model has no classifier for CrossEntropyLoss: "
                             "set it to the number of training identities before build_model (the trainer does "
                             "this from the training set)")
        # Without a classification loss the head skips the logits, so DDP sees no unused parameter branch.
        outputs = self.heads(features, targets if use_classifier else None)
        return self.losses(outputs, targets)

    def losses(self, outputs: Dict[str, Any], gt_labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Weighted losses named ``loss_cls``, ``loss_triplet``, ``loss_circle``, ``loss_cosface``.

        The metric losses see the embeddings of all DDP ranks (see ``losses.distributed``).
        """
        kw, names = self.loss_kwargs, self.loss_names
        out: Dict[str, torch.Tensor] = {}
        if "CrossEntropyLoss" in names:
            ce = kw["ce"]
            loss = cross_entropy_loss(outputs["cls_outputs"], gt_labels, ce["eps"], ce["alpha"])
            out["loss_cls"] = loss * ce["scale"]
        metric = [n for n in names if n in LOSS_NAMES and n != "CrossEntropyLoss"]
        if not metric:
            return out
        world = comm.get_world_size()
        feats, labels = gather_for_mining(outputs["features"], gt_labels)
        if "TripletLoss" in metric:
            tri = kw["tri"]
            loss = triplet_loss(feats, labels, tri["margin"], tri["norm_feat"], tri["hard_mining"])
            out["loss_triplet"] = ddp_gradient_scale(loss, world) * tri["scale"]
        if "CircleLoss" in metric:
            circle = kw["circle"]
            loss = pairwise_circleloss(feats, labels, circle["margin"], circle["gamma"])
            out["loss_circle"] = ddp_gradient_scale(loss, world) * circle["scale"]
        if "Cosface" in metric:
            cosface = kw["cosface"]
            loss = pairwise_cosface(feats, labels, cosface["margin"], cosface["gamma"])
            out["loss_cosface"] = ddp_gradient_scale(loss, world) * cosface["scale"]
        return out
