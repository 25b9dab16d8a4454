"""Feature extraction over a test loader, feeding a stateful evaluator."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Dict, Optional

import torch
from torch import nn
from tqdm import tqdm

from ..utils import comm

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class DatasetEvaluator:
    """Collects model outputs batch by batch, then computes results once."""

    def reset(self) -> None:
        """Forget everything processed so far (called before each pass over the data)."""

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        """Record one batch: ``inputs`` as given by the loader, ``outputs`` the model's features."""

    def evaluate(self) -> Dict[str, float]:
        """Results of the pass; an empty dict on processes that do not compute them."""
        return {}


def _autocast(device: torch.device, amp_dtype: str) -> contextlib.AbstractContextManager:
    if not amp_dtype:
        return contextlib.nullcontext()
    if amp_dtype not in _AMP_DTYPES:
        raise ValueError(f"TEST.AMP_DTYPE must be '', 'float16' or 'bfloat16', got {amp_dtype!r}")
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp_dtype])


def extract_features(model: nn.Module, inputs: Dict[str, Any], flip_test: bool = False,
                     amp_dtype: str = "") -> torch.Tensor:
    """Float32 features of one batch; with ``flip_test`` the mean of the image's and its mirror's."""
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    images = inputs["images"].to(device, non_blocking=True)
    batch = dict(inputs, images=images)
    with _autocast(device, amp_dtype):
        feats = model(batch).float()
        if flip_test:
            feats = (feats + model(dict(inputs, images=images.flip(dims=[3]))).float()) / 2
    return feats


def inference_on_dataset(model: nn.Module, data_loader: Any, evaluator: DatasetEvaluator,
                         flip_test: bool = False, amp_dtype: Optional[str] = None) -> Dict[str, float]:
    """Run ``model`` in eval mode without gradients over ``data_loader`` and evaluate.

    The model's training flag is restored afterwards. ``amp_dtype`` defaults to the evaluator's
    ``cfg.TEST.AMP_DTYPE`` when it has a config. A progress bar is shown on rank 0.
    """
    if amp_dtype is None:
        cfg = getattr(evaluator, "cfg", None)
        amp_dtype = cfg.TEST.AMP_DTYPE if cfg is not None else ""
    evaluator.reset()
    was_training = model.training
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    start = time.perf_counter()
    num_images = 0
    try:
        model.eval()
        with torch.no_grad():
            for inputs in tqdm(data_loader, total=total, desc="inference", disable=not comm.is_main_process(),
                               leave=False):
                outputs = extract_features(model, inputs, flip_test, amp_dtype)
                num_images += outputs.shape[0]
                evaluator.process(inputs, outputs)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info("Extracted features of %d images in %.1f s (%.1f images/s on this process)",
                num_images, elapsed, num_images / max(elapsed, 1e-9))
    results = evaluator.evaluate()
    return results if results is not None else {}
