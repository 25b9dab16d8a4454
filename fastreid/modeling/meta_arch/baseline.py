"""Baseline re-id model: normalise 0..255 images, backbone, embedding head, sum of configured losses."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Union

import torch
from torch import nn

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

    ``pixel_mean``/``pixel_std`` are non-persistent buffers: they come from the config, not checkpoints.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        out_channels = getattr(self.backbone, "out_channels", cfg.MODEL.BACKBONE.FEAT_DIM)
        if out_channels != cfg.MODEL.BACKBONE.FEAT_DIM:
            raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but the "
                             f"{cfg.MODEL.BACKBONE.DEPTH} backbone outputs {out_channels} channels: set it to "
                             f"{out_channels}")
        self.heads = build_heads(cfg)
        mean, std = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
        if len(mean) != len(std):
            raise ValueError(f"MODEL.PIXEL_MEAN ({len(mean)} values) and MODEL.PIXEL_STD ({len(std)}) differ in length")
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.loss_names = tuple(cfg.MODEL.LOSSES.NAME)
        unknown = [n for n in self.loss_names if n not in LOSS_NAMES]
        if unknown:
            raise ValueError(f"Unknown MODEL.LOSSES.NAME entries {unknown}; choose from {', '.join(LOSS_NAMES)}")
        self.loss_cfg = cfg.MODEL.LOSSES.clone()
        self.num_classes = cfg.MODEL.HEADS.NUM_CLASSES
        classifier = getattr(self.heads, "weight", None)
        if "CrossEntropyLoss" not in self.loss_names and isinstance(classifier, nn.Parameter):
            # Kept for checkpoint compatibility but unused: DDP would stop on a parameter without gradient.
            classifier.requires_grad_(False)

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
        targets = batched_inputs["targets"].to(self.device).long()
        use_classifier = "CrossEntropyLoss" in self.loss_names
        if use_classifier and self.num_classes <= 0:
            raise ValueError("MODEL.HEADS.NUM_CLASSES is 0, so the model has no classifier for CrossEntropyLoss: "
                             "set it to the number of training identities before build_model (the trainer does "
                             "this from the training set)")
        # Without a classification loss the head skips the logits, so DDP sees no unused parameter branch.
        outputs = self.heads(features, targets if use_classifier else None)
        return self.losses(outputs, targets)

    def losses(self, outputs: Dict[str, Any], targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Weighted losses named ``loss_cls``, ``loss_triplet``, ``loss_circle``, ``loss_cosface``.

        The metric losses see the embeddings of all DDP ranks (see ``losses.distributed``).
        """
        c = self.loss_cfg
        out: Dict[str, torch.Tensor] = {}
        if "CrossEntropyLoss" in self.loss_names:
            out["loss_cls"] = cross_entropy_loss(outputs["cls_outputs"], targets, c.CE.EPSILON, c.CE.ALPHA) * c.CE.SCALE
        metric = [n for n in self.loss_names if n != "CrossEntropyLoss"]
        if not metric:
            return out
        world = comm.get_world_size()
        feats, labels = gather_for_mining(outputs["features"], targets)
        if "TripletLoss" in metric:
            loss = triplet_loss(feats, labels, c.TRI.MARGIN, c.TRI.NORM_FEAT, c.TRI.HARD_MINING)
            out["loss_triplet"] = ddp_gradient_scale(loss, world) * c.TRI.SCALE
        if "CircleLoss" in metric:
            loss = pairwise_circleloss(feats, labels, c.CIRCLE.MARGIN, c.CIRCLE.GAMMA)
            out["loss_circle"] = ddp_gradient_scale(loss, world) * c.CIRCLE.SCALE
        if "Cosface" in metric:
            loss = pairwise_cosface(feats, labels, c.COSFACE.MARGIN, c.COSFACE.GAMMA)
            out["loss_cosface"] = ddp_gradient_scale(loss, world) * c.COSFACE.SCALE
        return out
