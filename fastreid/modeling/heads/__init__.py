"""Heads; importing this package registers them in HEAD_REGISTRY."""
from .build import HEAD_REGISTRY, REID_HEADS_REGISTRY, build_heads
from .clas_head import ClasHead
from .embedding_head import EmbeddingHead

__all__ = ["ClasHead", "EmbeddingHead", "build_heads", "HEAD_REGISTRY", "REID_HEADS_REGISTRY"]
