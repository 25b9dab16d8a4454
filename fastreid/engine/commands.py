"""What ``tools/train_net.py`` and ``tools/test.py`` do, importable (the demo and tests call it too)."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, Optional

from torch import nn

from fastreid.config import CfgNode, ConfigError
from fastreid.utils import comm
from fastreid.utils.checkpoint import (convert_reference_state_dict, load_checkpoint_file,
                                       load_state_dict_reported, split_checkpoint)

from .defaults import default_setup, setup_cfg
from .stages import has_stages, plan_stages, previous_stage_weights, run_stages, stage_config
from .trainer import DefaultTrainer

logger = logging.getLogger(__name__)

__all__ = ["check_config", "train_main", "test_main", "build_eval_model", "evaluate"]


def _eval_stage_cfg(args: argparse.Namespace) -> CfgNode:
    """For ``--eval-only`` on a STAGES file: the last stage, with its own best model unless
    ``MODEL.WEIGHTS`` is given on the command line."""
    stages = plan_stages(args.config_file, args.opts or [])
    last = stages[-1]
    cfg = stage_config(last, args.opts or [], stages[-2] if len(stages) > 1 else None)
    if "MODEL.WEIGHTS" not in (args.opts or [])[::2]:
        cfg.defrost()
        cfg.MODEL.WEIGHTS = previous_stage_weights(last.output_dir)
        cfg.freeze()
    return cfg


def check_config(args: argparse.Namespace) -> None:
    """Parse every config the command will use, so that bad keys exit non-zero before any work."""
    try:
        if has_stages(args.config_file):
            if args.eval_only:
                _eval_stage_cfg(args)
            else:
                stages = plan_stages(args.config_file, args.opts or [])
                for st in stages:
                    stage_config(st, args.opts or [], stages[st.index - 1] if st.index else None)
        else:
            setup_cfg(args)
    except ConfigError as e:
        raise SystemExit(f"Config error: {e}") from None


def build_eval_model(cfg: CfgNode) -> nn.Module:
    """The model of ``cfg`` in eval mode with ``MODEL.WEIGHTS`` loaded.

    When ``MODEL.HEADS.NUM_CLASSES`` is 0 it is taken from the checkpoint's classifier, so that the
    classifier loads too (it does not affect the features).
    """
    state: Optional[Dict[str, Any]] = None
    if cfg.MODEL.WEIGHTS:
        state_dict, _ = split_checkpoint(load_checkpoint_file(cfg.MODEL.WEIGHTS), cfg.MODEL.WEIGHTS)
        state = convert_reference_state_dict(state_dict)
        if cfg.MODEL.HEADS.NUM_CLASSES == 0 and "heads.weight" in state:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.HEADS.NUM_CLASSES = int(state["heads.weight"].shape[0])
            cfg.freeze()
    else:
        logger.warning("MODEL.WEIGHTS is empty: evaluating a model without trained weights")
    model = DefaultTrainer.build_model(cfg)
    if state is not None:
        load_state_dict_reported(model, state, cfg.MODEL.WEIGHTS)
    model.eval()
    return model


def evaluate(cfg: CfgNode) -> Dict[str, Any]:
    """Load ``MODEL.WEIGHTS`` and run ``DefaultTrainer.test`` on every ``DATASETS.TESTS`` set."""
    return DefaultTrainer.test(cfg, build_eval_model(cfg))


def _train_one(cfg: CfgNode, args: argparse.Namespace, resume: bool) -> Dict[str, Any]:
    default_setup(cfg, args)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    results = trainer.train()
    # Rank 0 writes the final checkpoint; nobody reads it before it is there.
    comm.synchronize()
    return results


def train_main(args: argparse.Namespace) -> Dict[str, Any]:
    """Body of ``tools/train_net.py`` in every process: evaluate only, train one config, or run the stages."""
    if has_stages(args.config_file):
        if args.eval_only:
            cfg = _eval_stage_cfg(args)
            default_setup(cfg, args)
            return evaluate(cfg)
        results: Dict[str, Any] = {}

        def run_one(cfg: CfgNode, resume: bool) -> None:
            results.clear()
            results.update(_train_one(cfg, args, resume))

        run_stages(args.config_file, args.opts or [], args.resume, run_one,
                   log=lambda m: logger.info(m) if comm.is_main_process() else None)
        return results
    cfg = setup_cfg(args)
    if args.eval_only:
        default_setup(cfg, args)
        return evaluate(cfg)
    return _train_one(cfg, args, args.resume)


def test_main(args: argparse.Namespace) -> Dict[str, Any]:
    """Body of ``tools/test.py``: evaluation only, whatever ``--eval-only`` says."""
    args.eval_only = True
    return train_main(args)
