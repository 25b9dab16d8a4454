"""Several training stages as one command: a config whose top-level ``STAGES`` lists stage configs.

Stage ``i`` (counted from 1) runs in ``OUTPUT_DIR/stage{i}_<config stem>``; stage ``i+1`` starts from stage ``i``'s
``model_best.pth`` (``model_final.pth`` when no evaluation ran) with ``MODEL.BACKBONE.PRETRAIN False``.
Command-line overrides apply to every stage. With ``--resume`` finished stages (``model_final.pth``
present) are skipped and the running one resumes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from fastreid.config import CfgNode, ConfigError, get_cfg, load_yaml_with_base
from fastreid.utils import comm

__all__ = ["Stage", "plan_stages", "stage_config", "previous_stage_weights", "stage_finished", "has_stages", "run_stages"]


@dataclass
class Stage:
    """One stage: its index, config file and output folder."""

    index: int
    config_file: str
    output_dir: str


def has_stages(config_file: str) -> bool:
    """Whether ``config_file`` (with its ``_BASE_`` chain) lists a non-empty ``STAGES``."""
    if not config_file:
        return False
    data, _ = load_yaml_with_base(config_file)
    return bool(data.get("STAGES"))


def plan_stages(config_file: str, opts: Sequence[str]) -> List[Stage]:
    """The stages listed by ``config_file``; paths are relative to that file.

    Raises:
        ConfigError: a listed file is missing, or a stage itself lists stages.
    """
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    base = os.path.dirname(os.path.abspath(config_file))
    stages = []
    for i, ref in enumerate(cfg.STAGES):
        path = ref if os.path.isabs(ref) else os.path.join(base, ref)
        if not os.path.isfile(path):
            raise ConfigError(f"{config_file}: STAGES[{i}] file not found: {ref} (resolved to {path})")
        if has_stages(path):
            raise ConfigError(f"{config_file}: STAGES[{i}] ({ref}) lists stages itself; nesting is not supported")
        stem = os.path.splitext(os.path.basename(path))[0]
        stages.append(Stage(i, path, os.path.join(cfg.OUTPUT_DIR, f"stage{i + 1}_{stem}")))
    return stages


def previous_stage_weights(output_dir: str) -> str:
    """``model_best.pth`` of a finished stage, else its ``model_final.pth``."""
    best = os.path.join(output_dir, "model_best.pth")
    return best if os.path.isfile(best) else os.path.join(output_dir, "model_final.pth")


def stage_finished(output_dir: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "model_final.pth"))


def stage_config(stage: Stage, opts: Sequence[str], previous: Optional[Stage] = None) -> CfgNode:
    """The frozen config of one stage: its file, the command-line overrides, then the stage wiring."""
    cfg = get_cfg()
    cfg.merge_from_file(stage.config_file)
    cfg.merge_from_list(list(opts))
    cfg.OUTPUT_DIR = stage.output_dir
    if previous is not None:
        cfg.MODEL.WEIGHTS = previous_stage_weights(previous.output_dir)
        cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.freeze()
    return cfg


def run_stages(config_file: str, opts: Sequence[str], resume: bool,
               run_one: Callable[[CfgNode, bool], None], log: Callable[[str], None] = print) -> List[Stage]:
    """Run every stage in order with ``run_one(cfg, resume)``; returns the stage list.

    ``run_one`` must leave ``model_final.pth`` in the stage's OUTPUT_DIR when the stage succeeds.
    """
    stages = plan_stages(config_file, opts)
    # Build every stage's config first so that a bad key fails before any training.
    for st in stages:
        stage_config(st, opts, stages[st.index - 1] if st.index > 0 else None)
    for st in stages:
        previous = stages[st.index - 1] if st.index > 0 else None
        # Built again now: which weights the previous stage left is only known once it has run.
        cfg = stage_config(st, opts, previous)
        if resume and stage_finished(st.output_dir):
            log(f"Stage {st.index + 1} ({os.path.basename(st.config_file)}) already finished in {st.output_dir}; skipped")
            continue
        if previous is not None and not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"Stage {st.index} needs {cfg.MODEL.WEIGHTS} from stage {previous.index}, "
                                    f"which is missing")
        log(f"Stage {st.index + 1}: {st.config_file} -> {st.output_dir}")
        run_one(cfg, resume)
        # Rank 0 writes the checkpoints the next stage reads.
        comm.synchronize()
    return stages
