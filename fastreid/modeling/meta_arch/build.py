"""``build_model``: the meta-architecture named in the config, on its device (fast-reid's home of it)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from fastreid.utils.registry import META_ARCH_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["META_ARCH_REGISTRY", "build_model"]


def build_model(cfg) -> nn.Module:
    """The meta-architecture named by MODEL.META_ARCHITECTURE, on MODEL.DEVICE (CPU when CUDA is missing)."""
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    device = str(cfg.MODEL.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available: using cpu", device)
        device = "cpu"
    model.to(torch.device(device))
    logger.debug("Built %s with %d parameters", type(model).__name__, sum(p.numel() for p in model.parameters()))
    return model
