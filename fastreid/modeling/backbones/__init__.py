"""Backbones; importing this package registers them in BACKBONE_REGISTRY."""
from fastreid.utils.registry import BACKBONE_REGISTRY

from .resnet import ResNet, build_resnet_backbone


def build_backbone(cfg):
    """The backbone named by MODEL.BACKBONE.NAME, built from the config."""
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg)


__all__ = ["BACKBONE_REGISTRY", "ResNet", "build_resnet_backbone", "build_backbone"]
