"""A model for evaluation or search: built from the config, trained weights loaded strictly.

This is what evaluation (``tools/test.py``), the predictor, the search index and the ONNX export need
from a checkpoint; it lives with the model and the checkpoint helpers, so inference never imports the
training engine (trainer, hooks, launch, stages).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from torch import nn

from fastreid.config import CfgNode, ConfigError
from fastreid.utils.checkpoint import (convert_reference_state_dict, load_checkpoint_file, load_state_dict_strict,
                                       split_checkpoint)

from .meta_arch import build_model

logger = logging.getLogger(__name__)

# MODEL.WEIGHTS value that evaluates the random initialisation on purpose.
RANDOM_WEIGHTS = "random"


def eval_config(cfg: CfgNode) -> CfgNode:
    """``cfg`` for evaluation: the backbone is never initialised from ImageNet (the checkpoint replaces it;
    offline the download would fail)."""
    if not cfg.MODEL.BACKBONE.PRETRAIN:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.freeze()
    return cfg


def build_eval_model(cfg: CfgNode) -> nn.Module:
    """The model of ``cfg`` in eval mode with ``MODEL.WEIGHTS`` loaded strictly.

    Every key the features depend on must be in the checkpoint with its shape (the classifier is
    training-only and skipped). When ``MODEL.HEADS.NUM_CLASSES`` is 0 it is taken from the checkpoint's
    classifier. ``MODEL.WEIGHTS random`` evaluates the initialisation on purpose; empty is an error.

    Raises:
        ConfigError: MODEL.WEIGHTS is empty.
        CheckpointError: the file is unreadable or does not fit the model (table and likely cause).
    """
    cfg = eval_config(cfg)
    weights = cfg.MODEL.WEIGHTS
    state: Optional[Dict[str, Any]] = None
    if weights == RANDOM_WEIGHTS:
        logger.warning("MODEL.WEIGHTS random: evaluating a randomly initialised model, as asked")
    elif not weights:
        raise ConfigError("MODEL.WEIGHTS is empty: evaluation needs a trained checkpoint (MODEL.WEIGHTS "
                          f"{RANDOM_WEIGHTS} evaluates an untrained model on purpose)")
    else:
        state_dict, _ = split_checkpoint(load_checkpoint_file(weights), weights)
        state = convert_reference_state_dict(state_dict)
        if cfg.MODEL.HEADS.NUM_CLASSES == 0 and "heads.weight" in state:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.HEADS.NUM_CLASSES = int(state["heads.weight"].shape[0])
            cfg.freeze()
    model = build_model(cfg)
    logger.info("Model: %s with %.2f M parameters", type(model).__name__,
                sum(p.numel() for p in model.parameters()) / 1e6)
    if state is not None:
        load_state_dict_strict(model, state, weights)
    model.eval()
    return model
