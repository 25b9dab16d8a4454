"""Augmentations for line drawings (``INPUT.DRAWING.*``): what varies between two sheets of one patent.

Photographs vary in colour and lighting; patent drawings vary in pen width, ink, which view of the
object is shown and how much of it. Each transform works on the (already resized) PIL image, fills
anything it uncovers with white paper, and draws its randomness from torch's generator (seeded per
sample by the dataset, so resume stays exact).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

WHITE = 255


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(()).item())


class LineWidthJitter:
    """With probability ``p``, thicken every line by 1..``max_px`` pixels on each side (dilating the ink)
    or thin it: half of a one-pixel erosion, so a line one pixel wide gets lighter but never vanishes."""

    def __init__(self, p: float, max_px: int = 1) -> None:
        self.p, self.max_px = p, max(int(max_px), 1)

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return img
        px = 1 + int(torch.randint(self.max_px, ()).item())
        if torch.rand(()).item() < 0.5:
            return img.filter(ImageFilter.MinFilter(2 * px + 1))
        return Image.blend(img, img.filter(ImageFilter.MaxFilter(3)), 0.5)


class InkJitter:
    """Lighter or darker ink and off-white paper: ``out = paper - (paper_white - in) * ink``, with
    probability ``p``; ``ink`` in ``ink_range`` scales the darkness of the lines, ``paper`` in
    ``paper_range`` is the new paper level."""

    def __init__(self, p: float, ink_range: Sequence[float] = (0.5, 1.0),
                 paper_range: Sequence[float] = (225.0, 255.0)) -> None:
        self.p, self.ink_range, self.paper_range = p, tuple(ink_range), tuple(paper_range)

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return img
        ink = _uniform(*self.ink_range)
        paper = _uniform(*self.paper_range)
        arr = np.asarray(img).astype(np.float32)
        out = paper - (WHITE - arr) * ink * paper / WHITE
        return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


class RandomQuarterTurn:
    """Rotate by 90, 180 or 270 degrees with probability ``p`` (a patent shows the object from every
    side; the model should not key on which way up a view is drawn). Non-square images keep their
    size: the turned drawing is fitted and padded with white."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return img
        turns = 1 + int(torch.randint(3, ()).item())
        turned = img.rotate(90 * turns, expand=True, fillcolor=WHITE if img.mode == "L" else (WHITE,) * 3)
        if turned.size == img.size:
            return turned
        turned.thumbnail(img.size, Image.Resampling.BICUBIC)
        canvas = Image.new(img.mode, img.size, WHITE if img.mode == "L" else (WHITE,) * 3)
        canvas.paste(turned, ((img.size[0] - turned.size[0]) // 2, (img.size[1] - turned.size[1]) // 2))
        return canvas


class CropRescale:
    """With probability ``p``, keep a random window of ``scale`` of the area (aspect kept) and scale it
    back to the full size: a detail view, or a drawing placed with another margin."""

    def __init__(self, p: float, scale: Tuple[float, float] = (0.6, 1.0)) -> None:
        self.p, self.scale = p, (float(scale[0]), float(scale[1]))

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return img
        w, h = img.size
        side = float(np.sqrt(_uniform(*self.scale)))
        cw, ch = max(int(round(w * side)), 1), max(int(round(h * side)), 1)
        left = int(torch.randint(w - cw + 1, ()).item())
        top = int(torch.randint(h - ch + 1, ()).item())
        return F.resized_crop(img, top, left, ch, cw, [h, w], interpolation=InterpolationMode.BICUBIC)
