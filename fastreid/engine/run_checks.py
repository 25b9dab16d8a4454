"""Checks the preflight adds beyond stats and names: what a run would refuse later, found up front.

* The recorded query-expansion choice (``TEST.AQE.AUTO``): an unlabeled test set applies the choice a
  labeled set recorded; with no labeled set before it in ``DATASETS.TESTS`` the choice file must exist.
* The prepared copies (``DATASETS.PREPARED``): the copy a loader of ``INPUT.SIZE_TRAIN`` / ``SIZE_TEST``
  would read matches the run and holds every listed file.
* With ``--check`` only (it costs a model build): ``MODEL.WEIGHTS`` is read, and for evaluation the model
  is built on the CPU (no data) and the checkpoint strictly matched against it, as the run will.

:data:`NOT_CHECKED` lists what ``--check`` cannot know. See docs/guarantees.md.
"""
from __future__ import annotations

import logging
import os
from typing import List

from fastreid.config import CfgNode

from .preflight import RANDOM_WEIGHTS, PreflightReport, _quiet

logger = logging.getLogger(__name__)

__all__ = ["run_checks", "check_qe_choice", "check_prepared_copies", "check_weights_fit", "NOT_CHECKED"]

# What no check before the run can know; printed at the end of the --check summary.
NOT_CHECKED = (
    "listed images are stat-ed, not decoded: a file that exists but cannot be decoded stops the run when it "
    "is read",
    "GPU memory, free disk space for checkpoints and features, and the rendezvous of several processes "
    "(--num-gpus, --dist-url)",
    "the weights a later stage of a STAGES run reads from the stage before (they do not exist yet)",
    "the loss or accuracy of the trained model",
)


def check_qe_choice(cfg: CfgNode) -> List[str]:
    """Problems with ``TEST.AQE.AUTO``'s recorded choice: an unlabeled set of ``DATASETS.TESTS`` with no
    labeled set before it needs the choice file (``TEST.AQE.AUTO_FILE``, else ``OUTPUT_DIR/qe_choice.json``)."""
    from fastreid.evaluation.qe_tuning import load_choice
    from fastreid.utils.registry import DATASET_REGISTRY

    if not cfg.TEST.AQE.AUTO:
        return []
    path = cfg.TEST.AQE.AUTO_FILE or os.path.join(cfg.OUTPUT_DIR, "qe_choice.json")
    for name in cfg.DATASETS.TESTS:
        if name not in DATASET_REGISTRY:
            return []  # reported by the preflight's name check
        if getattr(DATASET_REGISTRY.get(name), "labeled", True):
            return []  # a labeled set evaluated first records the choice the unlabeled ones apply
        try:
            load_choice(path)
        except (OSError, ValueError) as e:
            return [f"DATASETS.TESTS entry {name!r} is unlabeled and TEST.AQE.AUTO is True: {e}"]
        return []
    return []


def check_prepared_copies(cfg: CfgNode, train: bool, evaluate: bool) -> List[str]:
    """Problems with the prepared copy each loader would read (``DATASETS.PREPARED``): a copy that does not
    match the run, ``always`` without a copy, a listed file missing from the copy."""
    from fastreid.data.build import load_dataset
    from fastreid.data.datasets import datasets_root
    from fastreid.data.prepare import resolve_root
    from fastreid.utils.registry import DATASET_REGISTRY

    problems: List[str] = []
    uses = ([(n, cfg.INPUT.SIZE_TRAIN, True, ("train",)) for n in cfg.DATASETS.NAMES] if train else []) + \
        ([(n, cfg.INPUT.SIZE_TEST, False, ("query", "gallery")) for n in cfg.DATASETS.TESTS] if evaluate else [])
    if not uses or cfg.DATASETS.PREPARED == "never":
        return problems
    root = datasets_root(cfg)
    for name, size, training, splits in uses:
        if name not in DATASET_REGISTRY:
            continue
        try:
            with _quiet("fastreid.data"):
                folder = resolve_root(cfg, root, size, training)
                if os.path.abspath(folder) == os.path.abspath(root):
                    continue
                ds = load_dataset(cfg, name, size, training)
        except Exception as e:  # any refusal of the copy is one line of the report
            problems.append(f"Dataset {name} at {size[0]}x{size[1]} (DATASETS.PREPARED "
                            f"{cfg.DATASETS.PREPARED}): {e}")
            continue
        missing = [p for split in splits for p, _, _ in (getattr(ds, split, None) or []) if not os.path.isfile(p)]
        if missing:
            problems.append(f"The prepared copy {folder} lacks {len(missing)} listed image(s) of {name}, e.g. "
                            f"{missing[0]}; run tools/prepare_dataset.py again or set DATASETS.PREPARED never")
    return problems


def check_weights_fit(cfg: CfgNode, train: bool) -> List[str]:
    """Read ``MODEL.WEIGHTS``; for evaluation also build the model on the CPU and match the checkpoint
    strictly, exactly as evaluation loads it (a truncated file, another depth or head are refused)."""
    from fastreid.utils.checkpoint import CheckpointError, load_checkpoint_file, split_checkpoint

    weights = cfg.MODEL.WEIGHTS
    if not weights or weights == RANDOM_WEIGHTS or not os.path.isfile(weights):
        return []  # empty, random and missing weights are the preflight's findings
    try:
        if train:
            split_checkpoint(load_checkpoint_file(weights), weights)
            return []
        from fastreid.modeling.eval_model import build_eval_model

        cpu = cfg.clone()
        cpu.defrost()
        cpu.MODEL.DEVICE = "cpu"
        cpu.freeze()
        with _quiet("fastreid.engine", "fastreid.utils.checkpoint", "fastreid.modeling"):
            build_eval_model(cpu)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as e:
        return [f"MODEL.WEIGHTS: {e}"]
    return []


def run_checks(cfg: CfgNode, *, train: bool, evaluate: bool = True, check_weights: bool = True,
               read_weights: bool = False) -> PreflightReport:
    """The checks of this module for one run (one stage), as a report to add to the preflight's.

    Args:
        cfg: the config of the run.
        train: the run trains.
        evaluate: the run evaluates ``DATASETS.TESTS``.
        check_weights: ``MODEL.WEIGHTS`` exists before the run (not a later stage's).
        read_weights: read the checkpoint and match it against the model (``--check``).
    """
    report = PreflightReport()
    evaluate = evaluate and bool(cfg.DATASETS.TESTS)
    if evaluate:
        report.errors += check_qe_choice(cfg)
    report.errors += check_prepared_copies(cfg, train, evaluate)
    if read_weights and check_weights:
        report.errors += check_weights_fit(cfg, train)
    return report
