"""ONNX export of the feature extractor, checked against PyTorch on real drawings.

The exported graph takes ``B x 3 x H x W`` float images in 0..255 (dynamic batch, the size of
``INPUT.SIZE_TEST``) and returns the raw features, with flip averaging inside when ``TEST.FLIP`` is
on. The file's metadata carries the config and the fingerprint of the checkpoint, so that
:class:`fastreid.retrieval.OnnxExtractor` can prepare drawings and search indexes can recognise it.
The TorchScript-based exporter is used: it needs only the ``onnx`` package (the newer exporter also
needs ``onnxscript``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from fastreid.config import ConfigError
from fastreid.data.preprocess import ImageLike
from fastreid.evaluation import extract_features, normalize
from fastreid.utils.file_io import atomic_open

from .extractor import ONNX_CONFIG_KEY, ONNX_FINGERPRINT_KEY, OnnxExtractor, TorchExtractor

logger = logging.getLogger(__name__)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install -e '.[onnx]'") from None
    return onnx


class _FeatureGraph(nn.Module):
    """What is exported: :func:`fastreid.evaluation.extract_features` on an image tensor, in float32 (mixed
    precision is a runtime choice of PyTorch on CUDA, not part of a portable graph)."""

    def __init__(self, model: nn.Module, flip_test: bool) -> None:
        super().__init__()
        self.model, self.flip_test = model, flip_test

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return extract_features(self.model, {"images": images}, self.flip_test, amp_dtype="")


def onnx_input_size(cfg) -> Tuple[int, int]:
    """The (height, width) the test transforms give every image: the centre crop of ``INPUT.CROP`` or a
    two-value ``INPUT.SIZE_TEST``; fast-reid's one-value size alone keeps each image's aspect, which a
    traced graph cannot take."""
    if cfg.INPUT.CROP.ENABLED:
        size = [int(v) for v in cfg.INPUT.CROP.SIZE]
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    if len(cfg.INPUT.SIZE_TEST) != 2:
        raise ConfigError(f"ONNX export needs a fixed input size, but INPUT.SIZE_TEST is {list(cfg.INPUT.SIZE_TEST)} "
                          f"(aspect kept per image): give [height, width] or enable INPUT.CROP")
    return int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1])


def export_onnx(extractor: TorchExtractor, output: str, opset: int = 17) -> str:
    """Write the extractor's model to ``output`` (ONNX, dynamic batch) with fastreid metadata; returns the path."""
    onnx = _onnx()
    h, w = onnx_input_size(extractor.cfg)
    graph = _FeatureGraph(extractor.module, extractor.flip_test).eval()
    dummy = torch.full((2, 3, int(h), int(w)), 255.0, device=next(extractor.module.parameters()).device)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        raw = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated upstream but is the one that works without onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            # IBN's InstanceNorm keeps no running statistics, so "train=True" is its eval behaviour too
            # (compare_onnx checks the result).
            warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
            torch.onnx.export(graph, (dummy,), raw, dynamo=False, opset_version=opset, input_names=["images"],
                              output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
        model = onnx.load(raw)
        for key, value in ((ONNX_CONFIG_KEY, extractor.cfg.dump()),
                           (ONNX_FINGERPRINT_KEY, json.dumps(extractor.fingerprint))):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        with atomic_open(output, "wb") as f:
            f.write(model.SerializeToString())
    logger.info("Exported the feature extractor to %s (opset %d, input 'images' Bx3x%dx%d in 0..255)",
                output, opset, h, w)
    return output


def compare_onnx(extractor: TorchExtractor, onnx_path: str, images: Sequence[ImageLike]) -> Dict[str, float]:
    """Max absolute differences between PyTorch (float32, as exported) and onnxruntime features of ``images``
    (raw and L2-normalised)."""
    batch = extractor.preprocess.batch(images)
    with torch.no_grad():
        ref = _FeatureGraph(extractor.module, extractor.flip_test)(batch).cpu()
    got = OnnxExtractor(onnx_path)(batch)
    return {"max_abs_diff": float((ref - got).abs().max()),
            "max_abs_diff_normalized": float((normalize(ref) - normalize(got)).abs().max()),
            "max_abs_feature": float(ref.abs().max()), "num_images": float(len(images))}
