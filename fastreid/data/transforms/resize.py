"""The one resize of a drawing to the model's input size (``INPUT.RESIZE_MODE``).

Drawings are drawn large and shrunk: a 1-px black line on a 1,024 px sheet, shrunk 4 to 8 times with
a bicubic filter, becomes a faint grey trace or vanishes between pixels. Modes:

- ``bicubic``: torchvision's antialiased bicubic resize (the reference pipeline; original checkpoints
  expect it);
- ``area``: pixel-area averaging (PIL's box filter): every line keeps its share of ink, as a lighter grey;
- ``ink``: the darkest value in a window as large as the shrink factor (ink spread over the pixels it
  will merge into), then area averaging: a 1-px line comes out about one output pixel wide and dark.

Training, evaluation, prepared copies, the search index and the page all call :func:`resize_drawing`
through the transforms, so a query is shrunk exactly like the indexed drawings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import minimum_filter
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

RESIZE_MODES = ("bicubic", "area", "ink")
# Below this shrink factor the modes differ by less than a grey level on a line; use bicubic.
_MIN_SHRINK = 1.5


def shrink_factor(image_size: Sequence[int], size: Sequence[int]) -> float:
    """How many input pixels one output pixel covers along the less-shrunk side.

    Args:
        image_size: ``(width, height)`` of the input (PIL order); ``size``: ``(height, width)`` wanted.
    """
    return min(image_size[1] / size[0], image_size[0] / size[1])


def resize_drawing(img: Image.Image, size: Sequence[int], mode: str = "bicubic") -> Image.Image:
    """``img`` resized to ``size`` = (height, width) with the named mode (see the module docstring)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"INPUT.RESIZE_MODE must be one of {RESIZE_MODES}, got {mode!r}")
    size = [int(size[0]), int(size[1])]
    factor = shrink_factor(img.size, size)
    if mode == "bicubic" or factor < _MIN_SHRINK:
        return F.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    if mode == "ink":
        arr = np.asarray(img)
        k = int(round(factor))
        window = (k, k) if arr.ndim == 2 else (k, k, 1)
        img = Image.fromarray(minimum_filter(arr, size=window, mode="nearest"), mode=img.mode)
    return img.resize((size[1], size[0]), Image.Resampling.BOX)


class DrawingResize:
    """Transform form of :func:`resize_drawing` for the PIL stage of the pipelines."""

    def __init__(self, size: Sequence[int], mode: str) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"INPUT.RESIZE_MODE must be one of {RESIZE_MODES}, got {mode!r}")
        self.size, self.mode = [int(size[0]), int(size[1])], mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return resize_drawing(img, self.size, self.mode)

    def __repr__(self) -> str:
        return f"DrawingResize(size={self.size}, mode={self.mode!r})"
