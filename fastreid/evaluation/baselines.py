"""Reference "models" that need no training, to put a trained model's numbers in context."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from fastreid.config import CfgNode


class PixelFeatures(nn.Module):
    """The raw-pixel baseline: the first channel of the (grey, test-size) image, flattened; with the
    evaluator's normalisation, retrieval by cosine similarity of the pixels."""

    def forward(self, batch: Any) -> torch.Tensor:
        images = batch["images"] if isinstance(batch, dict) else batch
        return images[:, 0].flatten(1).float()


def evaluate_features(cfg: CfgNode, model: nn.Module, dataset: str, output_dir: str) -> Dict[str, float]:
    """Metrics (labeled set) or ``result.npy`` (unlabeled set) of any feature ``model`` on ``dataset``,
    through the test loader and evaluator that score trained models."""
    from fastreid.data import build_reid_test_loader

    from .evaluator import inference_on_dataset
    from .reid_evaluation import ReidEvaluator

    loader, num_query = build_reid_test_loader(cfg, dataset)
    labeled = bool(getattr(loader.dataset, "labeled", True))
    evaluator = ReidEvaluator(cfg, num_query, output_dir, labeled=labeled)
    return inference_on_dataset(model, loader, evaluator) or {}
