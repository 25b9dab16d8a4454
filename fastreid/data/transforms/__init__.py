"""Image transforms built from the config."""
from .autoaugment import ORIGINAL_POLICY, OriginalAutoAugment
from .build import build_transforms, to_float_tensor

__all__ = ["ORIGINAL_POLICY", "OriginalAutoAugment", "build_transforms", "to_float_tensor"]
