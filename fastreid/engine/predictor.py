"""``DefaultPredictor``: a trained model as a function from image batches to features (fast-reid's name)."""
from __future__ import annotations

from typing import Sequence, Union

import torch

from fastreid.config import CfgNode
from fastreid.data.preprocess import ImageLike, InferencePreprocess
from fastreid.evaluation import extract_features
from fastreid.modeling.eval_model import build_eval_model


class DefaultPredictor:
    """The model of ``cfg`` with ``MODEL.WEIGHTS`` loaded, in eval mode, called on image batches.

    ``predictor(images)`` takes a ``B x 3 x H x W`` tensor in 0..255 (what the test loader yields) or a
    list of file paths / PIL images (prepared by :class:`fastreid.data.preprocess.InferencePreprocess`)
    and returns the float32 features on the CPU, un-normalised, with ``TEST.FLIP`` and
    ``TEST.AMP_DTYPE`` applied as in evaluation.
    """

    def __init__(self, cfg: CfgNode) -> None:
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.model = build_eval_model(self.cfg)
        self.preprocess = InferencePreprocess(self.cfg)
        self.flip_test = bool(self.cfg.TEST.FLIP.ENABLED)
        self.amp_dtype = str(self.cfg.TEST.AMP_DTYPE)

    def __call__(self, images: Union[torch.Tensor, Sequence[ImageLike]]) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            images = self.preprocess.batch(images)
        with torch.no_grad():
            feats = extract_features(self.model, {"images": images}, self.flip_test, self.amp_dtype)
        return feats.cpu()
