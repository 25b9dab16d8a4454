"""Models: backbones, heads, losses and meta-architectures, built from the config.

Importing this package registers every built-in component in its registry.
"""
from __future__ import annotations

from .backbones import build_backbone
from .heads import build_heads
from .meta_arch import Baseline, build_model

__all__ = ["build_model", "build_backbone", "build_heads", "Baseline"]
