"""Heads; importing this package registers them in HEAD_REGISTRY."""
from fastreid.utils.registry import HEAD_REGISTRY

from .embedding_head import EmbeddingHead


def build_heads(cfg):
    """The head named by MODEL.HEADS.NAME, built from the config."""
    return HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME)(cfg)


__all__ = ["EmbeddingHead", "build_heads"]
