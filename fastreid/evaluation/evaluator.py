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

# Autocast dtypes by name: TEST.AMP_DTYPE (besides "auto" and "") and SOLVER.AMP.DTYPE.
AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class DatasetEvaluator:
    """Collects model outputs batch by batch, then computes results once."""

    def reset(self) -> None:
        """Forget everything processed so far (called before each pass over the data)."""

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        """Record one batch: ``inputs`` as given by the loader, ``outputs`` the model's features."""

    def evaluate(self) -> Dict[str, float]:
        """Results of the pass; an empty dict on processes that do not compute them."""
        return {}


def resolve_amp_dtype(amp_dtype: str, device: torch.device) -> str:
    """``TEST.AMP_DTYPE`` for a device: "auto" is float16 on CUDA and off ("") elsewhere."""
    if amp_dtype == "auto":
        return "float16" if device.type == "cuda" else ""
    if amp_dtype and amp_dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"TEST.AMP_DTYPE must be 'auto', '', 'float16' or 'bfloat16', got {amp_dtype!r}")
    return amp_dtype


def _autocast(device: torch.device, amp_dtype: str) -> contextlib.AbstractContextManager:
    amp_dtype = resolve_amp_dtype(amp_dtype, device)
    if not amp_dtype:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[amp_dtype])


def extract_features(model: nn.Module, inputs: Dict[str, Any], flip_test: bool = False,
                     amp_dtype: str = "auto", channels_last: bool = True) -> torch.Tensor:
    """Float32 features of one batch; with ``flip_test`` the mean of the image's and its mirror's.

    ``amp_dtype`` as ``TEST.AMP_DTYPE``; ``channels_last`` (CUDA only) feeds the images in that memory
    format, which the convolutions then keep.
    """
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    images = inputs["images"].to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
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
    ``cfg.TEST.AMP_DTYPE`` when it has a config ("auto" without); ``TEST.CHANNELS_LAST`` is read from
    it too. A progress bar is shown on rank 0.
    """
    cfg = getattr(evaluator, "cfg", None)
    if amp_dtype is None:
        amp_dtype = cfg.TEST.AMP_DTYPE if cfg is not None else "auto"
    channels_last = bool(cfg.TEST.CHANNELS_LAST) if cfg is not None else True
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
                outputs = extract_features(model, inputs, flip_test, amp_dtype, channels_last)
                num_images += outputs.shape[0]
                evaluator.process(inputs, outputs)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    logger.info("Extracted features of %d images in %.1f s (%.1f images/s on this process; %s%s)",
                num_images, elapsed, num_images / max(elapsed, 1e-9), resolve_amp_dtype(amp_dtype, device) or "float32",
                ", channels_last" if channels_last and device.type == "cuda" else "")
    results = evaluator.evaluate()
    return results if results is not None else {}
