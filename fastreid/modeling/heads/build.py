"""``build_heads``: the head named in the config (fast-reid's home of it and of ``REID_HEADS_REGISTRY``)."""
from torch import nn

from fastreid.utils.registry import HEAD_REGISTRY

# fast-reid's name of the head registry.
REID_HEADS_REGISTRY = HEAD_REGISTRY

__all__ = ["HEAD_REGISTRY", "REID_HEADS_REGISTRY", "build_heads"]


def build_heads(cfg) -> nn.Module:
    """The head named by MODEL.HEADS.NAME, built from the config."""
    return HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME)(cfg)
