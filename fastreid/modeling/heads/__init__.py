"""Heads; importing this package registers them in HEAD_REGISTRY."""
from fastreid.utils.registry import HEAD_REGISTRY

from .embedding_head import EmbeddingHead

# fast-reid's name of the head registry.
REID_HEADS_REGISTRY = HEAD_REGISTRY


def build_heads(cfg):
    """The head named by MODEL.HEADS.NAME, built from the config."""
    return HEAD_REGISTRY.get(cfg.MODEL.HEADS.NAME)(cfg)


__all__ = ["EmbeddingHead", "build_heads", "HEAD_REGISTRY", "REID_HEADS_REGISTRY"]
