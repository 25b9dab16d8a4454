"""Test-time preprocessing of single drawings: the one path from a file or PIL image to a model input.

The test loaders, :class:`fastreid.engine.DefaultPredictor`, the search index and the search server
all turn a drawing into a tensor here, so a query is prepared exactly like the indexed drawings.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch
from PIL import Image

from fastreid.config import CfgNode

from .data_utils import read_image, to_model_mode
from .transforms import build_transforms

ImageLike = Union[str, Image.Image]


class InferencePreprocess:
    """``preprocess(image) -> 3 x H x W`` float tensor in 0..255, as the test loader yields it.

    Args:
        cfg: config; ``INPUT.SIZE_TEST``, ``INPUT.RESIZE_MODE`` and ``INPUT.GRAYSCALE`` decide the result.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self.transform = build_transforms(cfg, is_train=False)
        self.grayscale = bool(cfg.INPUT.GRAYSCALE)
        self.signature = preprocessing_signature(cfg)

    def __call__(self, image: ImageLike, origin: Optional[str] = None) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return self.transform(to_model_mode(image, self.grayscale))
        return self.transform(read_image(image, self.grayscale, origin))

    def batch(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Stack of the preprocessed ``images`` (``B x 3 x H x W``)."""
        if not images:
            raise ValueError("no images given")
        return torch.stack([self(im) for im in images])


def preprocessing_signature(cfg: CfgNode) -> Dict[str, Any]:
    """What decides a drawing's model input and its normalisation, as plain JSON values.

    Recorded in search indexes and exported models: two models whose signatures differ see
    different inputs for the same file.
    """
    return {
        "size_test": [int(v) for v in cfg.INPUT.SIZE_TEST],
        "grayscale": bool(cfg.INPUT.GRAYSCALE),
        "resize": str(cfg.INPUT.RESIZE_MODE),
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "flip_test": bool(cfg.TEST.FLIP.ENABLED),
    }
