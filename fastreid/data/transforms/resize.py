"""The one resize of a drawing to the model's input size (``INPUT.RESIZE_MODE``).

Drawings are drawn large and shrunk: a 1-px black line on a 1,024 px sheet, shrunk 4 to 8 times with
a bicubic filter, becomes a faint grey trace or vanishes between pixels. Modes:

- ``bicubic``: torchvision's antialiased bicubic resize (the reference pipeline; original checkpoints
  expect it);
- ``area``: pixel-area averaging (PIL's box filter): every line keeps its share of ink, as a lighter grey;
- ``ink``: area averaging, then the ink (darkness below the sheet's paper level) multiplied by half the
  shrink factor: a line's share of an output pixel falls as 1 / factor and is restored to a mid grey
  or darker, while a speck's share falls as 1 / factor**2 and stays faint; the paper becomes white.

An earlier ``ink`` took the darkest value in a window as large as the shrink factor before averaging;
it turned scanning specks into black dots and hatching into black areas and lost about 5 points of
mAP@10 on the real-object set (docs/recipes.md), so it was replaced.

Training, evaluation, prepared copies, the search index and the page all call :func:`resize_drawing`
through the transforms, so a query is shrunk exactly like the indexed drawings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
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
    small = img.resize((size[1], size[0]), Image.Resampling.BOX)
    if mode == "area":
        return small
    return _restore_ink(small, factor)


def _restore_ink(img: Image.Image, factor: float) -> Image.Image:
    """Ink below the paper level (the 90th percentile of the sheet) times ``factor / 2``, paper white."""
    arr = np.asarray(img).astype(np.float32)
    grey = arr if arr.ndim == 2 else arr.mean(axis=2)
    paper = max(float(np.percentile(grey, 90)), 1.0)
    ink = np.clip(1.0 - arr / paper, 0.0, 1.0) * (factor / 2.0)
    out = np.round(255.0 * (1.0 - np.clip(ink, 0.0, 1.0))).astype(np.uint8)
    return Image.fromarray(out, mode=img.mode)


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
