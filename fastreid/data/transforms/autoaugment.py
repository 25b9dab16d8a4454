"""AutoAugment as the DIRA challenge code (fast-reid) applies it: the AutoAugment paper's ImageNet
policy in its "original" form, ops on the PIL image through ``torchvision.transforms.v2.functional``.

What makes it differ from ``torchvision.transforms.v2.AutoAugment(IMAGENET)``: the geometric ops
fill uncovered pixels with a configurable value (grey 128 in the original, instead of black, which
draws black wedges on white drawings), each geometric op picks bilinear or bicubic at random, the
magnitude scales are the original's (rotation up to 30 degrees, shear up to 0.3, posterize to 4-8
bits, enhancement factors 0.1-1.9), and every op of the chosen sub-policy is drawn with its own
probability. The policy has no translation op, so the original's translation constant (57 px)
never acts. All randomness comes from torch's generator (seeded per sample by the dataset).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple, Union

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

MAX_LEVEL = 10.0

# (op, probability, magnitude 0..10): the paper's ImageNet policy, posterize in its original 4-8 bits form.
ORIGINAL_POLICY: Tuple[Tuple[Tuple[str, float, int], ...], ...] = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

GEOMETRIC_OPS = ("Rotate", "ShearX")
RANDOM_INTERPOLATIONS = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
_ENHANCE = {"Color": F.adjust_saturation, "Contrast": F.adjust_contrast, "Sharpness": F.adjust_sharpness}
_NO_ARG = {"AutoContrast": F.autocontrast, "Equalize": F.equalize, "Invert": F.invert}
OPS = frozenset(("Rotate", "ShearX", "PosterizeOriginal", "Solarize", *_ENHANCE, *_NO_ARG))

OpArgs = Dict[str, Union[float, int, InterpolationMode]]


def _random_sign(value: float) -> float:
    return -value if float(torch.rand(())) < 0.5 else value


def draw_op_args(name: str, magnitude: float) -> OpArgs:
    """The arguments of one application of ``name`` at ``magnitude``, random sign and
    interpolation drawn from torch's generator (the magnitude itself is fixed by the policy)."""
    level = min(MAX_LEVEL, max(0.0, float(magnitude))) / MAX_LEVEL
    if name == "Rotate":
        return {"degrees": _random_sign(level * 30.0),
                "interpolation": RANDOM_INTERPOLATIONS[int(torch.randint(2, ()))]}
    if name == "ShearX":
        return {"factor": _random_sign(level * 0.3),
                "interpolation": RANDOM_INTERPOLATIONS[int(torch.randint(2, ()))]}
    if name == "PosterizeOriginal":
        return {"bits": int(level * 4) + 4}
    if name == "Solarize":
        return {"threshold": int(level * 256)}
    if name in _ENHANCE:
        return {"factor": level * 1.8 + 0.1}
    if name in _NO_ARG:
        return {}
    raise ValueError(f"Unknown AutoAugment op {name!r}; known: {sorted(OPS)}")


def apply_op(img: Image.Image, name: str, args: OpArgs, fill: Sequence[float]) -> Image.Image:
    """Apply one op with fixed arguments (deterministic).

    ShearX maps output pixel (x, y) to input (x + factor * y, y): sheared about the top-left corner,
    as PIL's affine transform in the original. ``fill`` colours the uncovered pixels.
    """
    fill = list(fill)
    if name == "Rotate":
        return F.rotate(img, float(args["degrees"]), interpolation=args["interpolation"], fill=fill)
    if name == "ShearX":
        shear = math.degrees(math.atan(float(args["factor"])))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[shear, 0.0],
                        interpolation=args["interpolation"], fill=fill, center=[0, 0])
    if name == "PosterizeOriginal":
        return img if int(args["bits"]) >= 8 else F.posterize(img, int(args["bits"]))
    if name == "Solarize":
        return F.solarize(img, int(args["threshold"]))
    if name in _ENHANCE:
        return _ENHANCE[name](img, float(args["factor"]))
    if name in _NO_ARG:
        return _NO_ARG[name](img)
    raise ValueError(f"Unknown AutoAugment op {name!r}; known: {sorted(OPS)}")


class OriginalAutoAugment:
    """One random sub-policy of ``ORIGINAL_POLICY`` per image; each of its ops is applied with its
    own probability. Takes and returns a PIL image."""

    def __init__(self, fill: Union[float, Sequence[float]] = 128) -> None:
        values = [float(fill)] * 3 if isinstance(fill, (int, float)) else [float(v) for v in fill]
        if len(values) != 3 or not all(0.0 <= v <= 255.0 for v in values):
            raise ValueError(f"AutoAugment fill must be one number or 3 numbers in 0..255, got {fill!r}")
        self.fill = [int(round(v)) for v in values]
        self.policy = ORIGINAL_POLICY

    def __call__(self, img: Image.Image) -> Image.Image:
        sub_policy = self.policy[int(torch.randint(len(self.policy), ()))]
        for name, prob, magnitude in sub_policy:
            if float(torch.rand(())) <= prob:
                img = apply_op(img, name, draw_op_args(name, magnitude), self.fill)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy=original, fill={self.fill})"
