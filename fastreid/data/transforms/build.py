"""Train and test image transforms built from ``INPUT.*`` on torchvision's transforms v2.

Images enter as 3-channel PIL images and leave as float tensors ``3 x H x W`` in 0..255 (the
model normalises with ``MODEL.PIXEL_MEAN``/``PIXEL_STD``; there is no division by 255 here).
All randomness comes from torch's generator, which the dataset seeds per sample for exact resume.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Union

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from fastreid.config import CfgNode, ConfigError

from .autoaugment import OriginalAutoAugment
from .drawing import CropRescale, InkJitter, LineWidthJitter, RandomQuarterTurn
from .resize import RESIZE_MODES, DrawingResize, resize_drawing

# torchvision's policies; "original" is the challenge code's own (``autoaugment.py``).
_TV_POLICIES = {
    "imagenet": T.AutoAugmentPolicy.IMAGENET,
    "cifar10": T.AutoAugmentPolicy.CIFAR10,
    "svhn": T.AutoAugmentPolicy.SVHN,
}
_POLICIES = ("original", *_TV_POLICIES)
_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def _size(value: Sequence[int], key: str) -> List[int]:
    if len(value) != 2 or any(int(v) <= 0 for v in value):
        raise ConfigError(f"{key} must be [height, width] with positive integers, got {list(value)}")
    return [int(v) for v in value]


class ShorterSideResize:
    """fast-reid's one-value size ``[S]``: the shorter side to S, the aspect kept, resized as ``INPUT.RESIZE_MODE``."""

    def __init__(self, side: int, mode: str) -> None:
        self.side, self.mode = int(side), mode

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        scale = self.side / min(w, h)
        return resize_drawing(img, (max(1, round(h * scale)), max(1, round(w * scale))), self.mode)

    def __repr__(self) -> str:
        return f"ShorterSideResize(side={self.side}, mode={self.mode!r})"


def _resize(value: Sequence[int], key: str, mode: str) -> list:
    """The resize step of a size key: ``[H, W]`` exactly, fast-reid's ``[S]`` (shorter side) or ``[0]`` (none)."""
    if len(value) == 1 and int(value[0]) == 0:
        return []
    if len(value) == 1 and int(value[0]) > 0:
        return [ShorterSideResize(int(value[0]), mode)]
    return [DrawingResize(_size(value, key), mode)]


def _crop_size(value: Sequence[int]) -> Union[int, List[int]]:
    if len(value) == 1 and int(value[0]) > 0:
        return int(value[0])
    return _size(value, "INPUT.CROP.SIZE")


def _range(value: Sequence[float], key: str) -> List[float]:
    if len(value) != 2 or not 0 < float(value[0]) <= float(value[1]):
        raise ConfigError(f"{key} must be [low, high] with 0 < low <= high, got {list(value)}")
    return [float(v) for v in value]


def _prob(value: float, key: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key} must be a probability in [0, 1], got {value}")
    return float(value)


def _autoaugment(node: CfgNode) -> Callable:
    """The AutoAugment named by ``INPUT.AUTOAUG.POLICY``, filling uncovered pixels with ``.FILL``."""
    policy = str(node.POLICY).lower()
    if policy not in _POLICIES:
        raise ConfigError(f"INPUT.AUTOAUG.POLICY must be one of {list(_POLICIES)}, got {node.POLICY!r}")
    fill = float(node.FILL)
    if not 0.0 <= fill <= 255.0:
        raise ConfigError(f"INPUT.AUTOAUG.FILL must be a grey level in 0..255, got {node.FILL!r}")
    if policy == "original":
        return OriginalAutoAugment(fill)
    return T.AutoAugment(_TV_POLICIES[policy], fill=[int(round(fill))] * 3)


def _drawing_steps(node: CfgNode) -> list:
    """The ``INPUT.DRAWING`` augmentations whose probability is above 0, in a fixed order."""
    d = "INPUT.DRAWING."
    if int(node.LINE_MAX_PX) < 1:
        raise ConfigError(f"{d}LINE_MAX_PX must be >= 1, got {node.LINE_MAX_PX}")
    low, high = (float(v) for v in node.CROP_SCALE)
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"{d}CROP_SCALE must be (low, high) with 0 < low <= high <= 1, got {node.CROP_SCALE}")
    candidates = [
        (_prob(node.LINE_PROB, d + "LINE_PROB"), lambda p: LineWidthJitter(p, int(node.LINE_MAX_PX))),
        (_prob(node.INK_PROB, d + "INK_PROB"), InkJitter),
        (_prob(node.CROP_PROB, d + "CROP_PROB"), lambda p: CropRescale(p, (low, high))),
        (_prob(node.ROT90_PROB, d + "ROT90_PROB"), RandomQuarterTurn),
        (_prob(node.VFLIP_PROB, d + "VFLIP_PROB"), lambda p: T.RandomVerticalFlip(p=p)),
    ]
    return [make(p) for p, make in candidates if p > 0]


def resize_mode(cfg: CfgNode) -> str:
    """``INPUT.RESIZE_MODE``, checked."""
    mode = str(cfg.INPUT.RESIZE_MODE)
    if mode not in RESIZE_MODES:
        raise ConfigError(f"INPUT.RESIZE_MODE must be one of {list(RESIZE_MODES)}, got {mode!r}")
    return mode


def to_float_tensor() -> T.Compose:
    """PIL image -> float32 tensor keeping the 0..255 range."""
    return T.Compose([T.PILToTensor(), T.ToDtype(torch.float32, scale=False)])


def build_transforms(cfg: CfgNode, is_train: bool = True) -> T.Compose:
    """The training augmentation pipeline or the deterministic test resize, from ``cfg.INPUT``.

    Train order (as the reference): AutoAugment (with probability, on the image as read, before
    the resize, like the challenge code), the resize of ``INPUT.RESIZE_MODE`` (bicubic as the
    reference), the drawing augmentations of ``INPUT.DRAWING`` (ours; all off by default), flip,
    pad + random crop, colour jitter (with probability), to tensor, random erasing; with
    ``INPUT.CROP`` a random resized crop follows the resize.
    Test: the same resize to ``SIZE_TEST`` on the PIL image (then a centre crop with ``INPUT.CROP``), to tensor.
    Sizes are ``[H, W]``, or fast-reid's ``[S]`` (shorter side S, aspect kept) and ``[0]`` (no resize).
    """
    inp = cfg.INPUT
    if not is_train:
        steps: list = _resize(inp.SIZE_TEST, "INPUT.SIZE_TEST", resize_mode(cfg))
        if inp.CROP.ENABLED:
            steps.append(T.CenterCrop(_crop_size(inp.CROP.SIZE)))
        return T.Compose(steps + [to_float_tensor()])

    steps = []
    if inp.AUTOAUG.ENABLED:
        steps.append(T.RandomApply([_autoaugment(inp.AUTOAUG)], p=_prob(inp.AUTOAUG.PROB, "INPUT.AUTOAUG.PROB")))
    steps += _resize(inp.SIZE_TRAIN, "INPUT.SIZE_TRAIN", resize_mode(cfg))
    if inp.CROP.ENABLED:
        steps.append(T.RandomResizedCrop(_crop_size(inp.CROP.SIZE), scale=_range(inp.CROP.SCALE, "INPUT.CROP.SCALE"),
                                         ratio=_range(inp.CROP.RATIO, "INPUT.CROP.RATIO"),
                                         interpolation=InterpolationMode.BICUBIC))
    steps += _drawing_steps(inp.DRAWING)
    if inp.FLIP.ENABLED:
        steps.append(T.RandomHorizontalFlip(p=_prob(inp.FLIP.PROB, "INPUT.FLIP.PROB")))
    if inp.PADDING.ENABLED:
        if inp.PADDING.MODE not in _PAD_MODES:
            raise ConfigError(f"INPUT.PADDING.MODE must be one of {_PAD_MODES}, got {inp.PADDING.MODE!r}")
        if int(inp.PADDING.SIZE) < 0:
            raise ConfigError(f"INPUT.PADDING.SIZE must be >= 0, got {inp.PADDING.SIZE}")
        if len(inp.SIZE_TRAIN) == 1 and int(inp.SIZE_TRAIN[0]) <= 0:
            raise ConfigError("INPUT.PADDING.ENABLED crops back to INPUT.SIZE_TRAIN, which is [0] (no size)")
        crop = int(inp.SIZE_TRAIN[0]) if len(inp.SIZE_TRAIN) == 1 else _size(inp.SIZE_TRAIN, "INPUT.SIZE_TRAIN")
        steps += [T.Pad(int(inp.PADDING.SIZE), padding_mode=inp.PADDING.MODE), T.RandomCrop(crop)]
    if inp.CJ.ENABLED:
        jitter = T.ColorJitter(inp.CJ.BRIGHTNESS, inp.CJ.CONTRAST, inp.CJ.SATURATION, inp.CJ.HUE)
        steps.append(T.RandomApply([jitter], p=_prob(inp.CJ.PROB, "INPUT.CJ.PROB")))
    steps.append(to_float_tensor())
    if inp.REA.ENABLED:
        value = [float(v) for v in inp.REA.VALUE]
        if len(value) != 3 or not all(0.0 <= v <= 255.0 for v in value):
            raise ConfigError(f"INPUT.REA.VALUE must be 3 numbers in 0..255 (one per channel), "
                              f"got {list(inp.REA.VALUE)}")
        steps.append(T.RandomErasing(p=_prob(inp.REA.PROB, "INPUT.REA.PROB"), value=value))
    return T.Compose(steps)
