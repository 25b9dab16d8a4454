"""Backbone initialisation from IBN-Net or torchvision ImageNet release files, or from a checkpoint of
this project (e.g. synthetic pretraining, see docs/training.md).

MODEL.BACKBONE.PRETRAIN_PATH names a local file; without one the release file is downloaded into the
torch hub cache. Every format is mapped onto our keys; what cannot be mapped (non-local and SE blocks,
the ImageNet classifier, a checkpoint's heads) is reported, not an error. A file that initialises less
than half of the backbone's weights is refused: it is another architecture, not a pretraining source.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

import torch
from torch import nn

from fastreid.utils.checkpoint import (LoadReport, convert_reference_state_dict, load_checkpoint_file,
                                       load_state_dict_reported, split_checkpoint)

from ..layers import IBN

logger = logging.getLogger(__name__)

_IBN_RELEASE = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
# (depth, with_ibn, with_se) -> release URL; other variants need MODEL.BACKBONE.PRETRAIN_PATH.
PRETRAIN_URLS: Dict[Tuple[str, bool, bool], str] = {
    ("18x", False, False): "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    ("34x", False, False): "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
    ("50x", False, False): "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    ("101x", False, False): "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
    ("18x", True, False): _IBN_RELEASE + "resnet18_ibn_a-2f571257.pth",
    ("34x", True, False): _IBN_RELEASE + "resnet34_ibn_a-94bc1577.pth",
    ("50x", True, False): _IBN_RELEASE + "resnet50_ibn_a-d9d0bb7b.pth",
    ("101x", True, False): _IBN_RELEASE + "resnet101_ibn_a-59ea0ac6.pth",
    ("101x", True, True): _IBN_RELEASE + "se_resnet101_ibn_a-fabed4e2.pth",
}


def download_weights(url: str) -> str:
    """Fetch ``url`` into the torch hub cache; returns the local path."""
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, os.path.basename(url.split("?")[0]))
    if not os.path.isfile(target):
        torch.hub.download_url_to_file(url, target, progress=True)
    return target


def resolve_pretrain_path(cfg) -> str:
    """MODEL.BACKBONE.PRETRAIN_PATH, or the downloaded release file for this depth/IBN setting."""
    bb = cfg.MODEL.BACKBONE
    if bb.PRETRAIN_PATH:
        if not os.path.isfile(bb.PRETRAIN_PATH):
            raise FileNotFoundError(f"MODEL.BACKBONE.PRETRAIN_PATH {bb.PRETRAIN_PATH!r} does not exist")
        return bb.PRETRAIN_PATH
    url = PRETRAIN_URLS.get((bb.DEPTH, bool(bb.WITH_IBN), bool(bb.WITH_SE)))
    if url is None:
        raise ValueError(f"No known ImageNet weights for DEPTH {bb.DEPTH} IBN {bb.WITH_IBN} SE {bb.WITH_SE}: "
                         "set MODEL.BACKBONE.PRETRAIN_PATH to a local file or MODEL.BACKBONE.PRETRAIN False")
    try:
        return download_weights(url)
    except Exception as err:  # network errors come in many types (URLError, OSError, HTTPError, ...)
        raise RuntimeError(f"Could not download ImageNet weights from {url} ({err}). Offline? Download the file "
                           "elsewhere and set MODEL.BACKBONE.PRETRAIN_PATH to it, or set "
                           "MODEL.BACKBONE.PRETRAIN False") from err


def map_imagenet_state_dict(state_dict: Mapping[str, Any], model: nn.Module) -> "OrderedDict[str, Any]":
    """Our keys for an IBN-Net or torchvision ResNet state_dict, or a whole model of this project.

    Drops the ImageNet classifier ``fc.*``; of a whole model (``backbone.*`` and ``heads.*`` keys) keeps
    the backbone without its prefix. Where ``model`` has an IBN layer but the file has a plain
    ``bn1`` (torchvision), the first half of the channels goes to ``bn1.IN`` (affine only) and the rest to
    ``bn1.BN``, which keeps each channel's learned scale and shift.
    """
    ibn_prefixes = {name + "." for name, m in model.named_modules() if isinstance(m, IBN)}
    halves = {name + ".": m.half for name, m in model.named_modules() if isinstance(m, IBN)}
    out: "OrderedDict[str, Any]" = OrderedDict()
    converted = convert_reference_state_dict(state_dict)
    if any(key.startswith("backbone.") for key in converted):
        converted = OrderedDict((key[len("backbone."):], value) for key, value in converted.items()
                                if key.startswith("backbone."))
    for key, value in converted.items():
        if key.startswith("fc."):
            continue
        prefix, _, leaf = key.rpartition(".")
        prefix += "."
        if prefix in ibn_prefixes and isinstance(value, torch.Tensor):
            half = halves[prefix]
            if value.dim() == 0:  # num_batches_tracked
                out[prefix + "BN." + leaf] = value
                continue
            if leaf in ("weight", "bias"):
                out[prefix + "IN." + leaf] = value[:half].clone()
            out[prefix + "BN." + leaf] = value[half:].clone()
            continue
        out[key] = value
    return out


def load_imagenet_weights(model: nn.Module, cfg) -> LoadReport:
    """Initialise ``model`` (the backbone) from ImageNet weights; returns the load report."""
    path = resolve_pretrain_path(cfg)
    state_dict, _ = split_checkpoint(load_checkpoint_file(path), path)
    mapped = map_imagenet_state_dict(state_dict, model)
    own = model.state_dict()
    fitting = sum(1 for k, v in mapped.items() if k in own and getattr(v, "shape", None) == own[k].shape)
    if fitting < len(own) / 2:
        raise ValueError(f"MODEL.BACKBONE.PRETRAIN_PATH {path}: only {fitting} of the backbone's {len(own)} "
                         f"weights fit (DEPTH {cfg.MODEL.BACKBONE.DEPTH}, WITH_IBN {cfg.MODEL.BACKBONE.WITH_IBN}); "
                         "is it a file of another architecture?")
    logger.info("Initialising the backbone from pretrained weights in %s", path)
    return load_state_dict_reported(model, mapped, path)


__all__ = ["PRETRAIN_URLS", "download_weights", "resolve_pretrain_path", "map_imagenet_state_dict",
           "load_imagenet_weights"]
