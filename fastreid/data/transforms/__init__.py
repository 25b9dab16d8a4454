"""Image transforms built from the config."""
from .build import build_transforms, to_float_tensor

__all__ = ["build_transforms", "to_float_tensor"]
