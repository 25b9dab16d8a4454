"""Feature extractors of the search index: the PyTorch model or its ONNX export, with a fingerprint.

A fingerprint says which features an extractor computes: the hash of the config keys that shape the
model's output, the hash of the checkpoint file, and the preprocessing signature. An ONNX file
exported by :mod:`fastreid.retrieval.export` carries the fingerprint (and config) of the checkpoint it
came from, so an index built with PyTorch accepts queries embedded by the ONNX model of the same
checkpoint, and refuses any other model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from fastreid.config import CfgNode, get_cfg
from fastreid.data.preprocess import ImageLike, InferencePreprocess, preprocessing_signature
from fastreid.engine.predictor import DefaultPredictor

logger = logging.getLogger(__name__)

ONNX_CONFIG_KEY = "fastreid.config"
ONNX_FINGERPRINT_KEY = "fastreid.fingerprint"
_HASH_CHUNK = 1 << 22
# The config key behind each entry of a preprocessing signature (fastreid.data.preprocess).
_PREPROCESSING_KEYS = {"size_test": "INPUT.SIZE_TEST", "grayscale": "INPUT.GRAYSCALE", "resize": "INPUT.RESIZE_MODE",
                       "pixel_mean": "MODEL.PIXEL_MEAN", "pixel_std": "MODEL.PIXEL_STD",
                       "flip_test": "TEST.FLIP.ENABLED"}


class FingerprintMismatch(ValueError):
    """Features of one model searched against an index of another model or preprocessing."""


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def config_sha256(cfg: CfgNode) -> str:
    """Hash of the config keys that shape features: ``MODEL`` (except where the weights come from and the
    device) and ``TEST.AMP_DTYPE``."""
    model = json.loads(json.dumps(cfg.MODEL))
    for key in ("WEIGHTS", "DEVICE"):
        model.pop(key, None)
    payload = json.dumps({"MODEL": model, "TEST.AMP_DTYPE": cfg.TEST.AMP_DTYPE}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def model_fingerprint(cfg: CfgNode) -> Dict[str, Any]:
    """Fingerprint of ``cfg`` with its ``MODEL.WEIGHTS`` file (which must exist)."""
    if not cfg.MODEL.WEIGHTS:
        raise FileNotFoundError("MODEL.WEIGHTS is empty: a search index needs a trained checkpoint file")
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise FileNotFoundError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: checkpoint not found")
    return {"config_sha256": config_sha256(cfg), "checkpoint_sha256": file_sha256(cfg.MODEL.WEIGHTS),
            "preprocessing": preprocessing_signature(cfg)}


def _preprocessing_keys(index_pre: Any, query_pre: Any) -> str:
    """The config keys whose values differ between two preprocessing signatures, with both values."""
    if not isinstance(index_pre, dict) or not isinstance(query_pre, dict):
        return "preprocessing"
    keys = sorted(set(index_pre) | set(query_pre))
    return ", ".join(f"{_PREPROCESSING_KEYS.get(k, k)} (index {index_pre.get(k)!r}, query model {query_pre.get(k)!r})"
                     for k in keys if index_pre.get(k) != query_pre.get(k))


def check_fingerprint(index_fp: Dict[str, Any], query_fp: Dict[str, Any], index_dir: str,
                      own_model: str = "") -> None:
    """Raise :class:`FingerprintMismatch` naming what differs between an index's model and a query model.

    ``own_model``: the file of the index's own model when that is what was loaded (then a difference means
    the file changed since the build, not that another model was given).
    """
    differ = []
    if index_fp.get("checkpoint_sha256") != query_fp.get("checkpoint_sha256"):
        differ.append("checkpoint (MODEL.WEIGHTS)")
    if index_fp.get("config_sha256") != query_fp.get("config_sha256"):
        differ.append("model config (MODEL.*)")
    if index_fp.get("preprocessing") != query_fp.get("preprocessing"):
        differ.append("preprocessing: " + _preprocessing_keys(index_fp.get("preprocessing"),
                                                              query_fp.get("preprocessing")))
    if not differ:
        return
    if own_model:
        raise FingerprintMismatch(
            f"The model file of the index {index_dir}, {own_model}, changed since the index was built (it differs "
            f"in {'; '.join(differ)} from the fingerprint in {index_dir}/manifest.json): the indexed features no "
            f"longer match it. Put back the file the index was built with, or build the index again with "
            f"tools/build_index.py into a new --output folder.")
    raise FingerprintMismatch(
        f"The index {index_dir} was built with another model: the query model differs in {'; '.join(differ)}. "
        f"Search with the index's own model (omit --config-file, MODEL.* and --onnx), or build an index with "
        f"this model.")


def _cfg_from_yaml(text: str) -> CfgNode:
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    return cfg


class Extractor:
    """Turns drawings into raw (un-normalised) float32 features; see the two subclasses."""

    kind = ""
    cfg: CfgNode
    fingerprint: Dict[str, Any]
    preprocess: InferencePreprocess
    # What :func:`fastreid.evaluation.inference_on_dataset` runs over a loader, and its flip option.
    module: nn.Module
    flip_test: bool = False
    amp_dtype: str = ""

    def __call__(self, images: Union[torch.Tensor, Sequence[ImageLike]]) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """The manifest's ``extractor`` entry: how to load this extractor again."""
        raise NotImplementedError


class TorchExtractor(Extractor):
    """The PyTorch model of ``cfg`` through :class:`fastreid.engine.DefaultPredictor`."""

    kind = "torch"

    def __init__(self, cfg: CfgNode) -> None:
        self.fingerprint = model_fingerprint(cfg)
        self.predictor = DefaultPredictor(cfg)
        self.cfg = self.predictor.cfg
        self.preprocess = self.predictor.preprocess
        self.module = self.predictor.model
        self.flip_test, self.amp_dtype = self.predictor.flip_test, self.predictor.amp_dtype

    def __call__(self, images: Union[torch.Tensor, Sequence[ImageLike]]) -> torch.Tensor:
        return self.predictor(images)

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "weights": os.path.abspath(self.cfg.MODEL.WEIGHTS)}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("ONNX extraction needs onnxruntime: pip install -e '.[onnx]'") from None
    return onnxruntime


class _OnnxModule(nn.Module):
    """An onnxruntime session as a module that :func:`fastreid.evaluation.extract_features` can call."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, batch: Union[Dict[str, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        images = batch["images"] if isinstance(batch, dict) else batch
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(images.float().cpu().numpy())})[0]
        return torch.from_numpy(out)


class OnnxExtractor(Extractor):
    """An ONNX file written by ``tools/export.py``, run with onnxruntime on the CPU.

    Flip averaging, if the config asked for it, is part of the exported graph.
    """

    kind = "onnx"

    def __init__(self, path: str, threads: int = 0) -> None:
        ort = _onnxruntime()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        if ONNX_FINGERPRINT_KEY not in meta or ONNX_CONFIG_KEY not in meta:
            raise ValueError(f"{path} has no fastreid metadata: export it with tools/export.py")
        self.path = path
        self.cfg = _cfg_from_yaml(meta[ONNX_CONFIG_KEY])
        self.cfg.freeze()
        self.fingerprint = json.loads(meta[ONNX_FINGERPRINT_KEY])
        self.preprocess = InferencePreprocess(self.cfg)
        self.module = _OnnxModule(session)

    def __call__(self, images: Union[torch.Tensor, Sequence[ImageLike]]) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            images = self.preprocess.batch(images)
        return self.module(images).float()

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "onnx": os.path.abspath(self.path), "onnx_sha256": file_sha256(self.path)}


def build_extractor(cfg: Optional[CfgNode] = None, onnx: str = "") -> Extractor:
    """The ONNX extractor when ``onnx`` names a file, else the PyTorch model of ``cfg``."""
    if onnx:
        return OnnxExtractor(onnx)
    if cfg is None:
        raise ValueError("either a config with MODEL.WEIGHTS or an ONNX file is needed to extract features")
    return TorchExtractor(cfg)


def load_recorded_extractor(entry: Dict[str, Any], config_path: str) -> Extractor:
    """The extractor a manifest's ``extractor`` entry names (the index's own model)."""
    own = entry.get("onnx" if entry["kind"] == "onnx" else "weights", "")
    if not os.path.isfile(own):
        index_dir = os.path.dirname(config_path)
        raise FileNotFoundError(
            f"The model file of the index {index_dir} was not found: {own} (recorded in {index_dir}/manifest.json; "
            f"moved or deleted since the index was built). Put it back there, search with --config-file and "
            f"MODEL.WEIGHTS of the same file elsewhere, or build the index again.")
    if entry["kind"] == "onnx":
        return OnnxExtractor(entry["onnx"])
    with open(config_path, encoding="utf-8") as f:
        cfg = _cfg_from_yaml(f.read())
    cfg.MODEL.WEIGHTS = entry["weights"]
    return TorchExtractor(cfg)
