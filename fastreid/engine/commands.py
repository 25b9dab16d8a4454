"""What ``tools/train_net.py`` and ``tools/test.py`` do, importable (the demo and tests call it too).

Order of work: parse every config the command will use, run the preflight on each (all stages up front),
then build models and data. Evaluation loads weights strictly. See docs/guarantees.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import traceback
from typing import Any, Callable, Dict, List, Tuple

from fastreid.config import CfgNode, ConfigError
from fastreid.modeling.eval_model import build_eval_model, eval_config
from fastreid.utils import comm
from fastreid.utils.checkpoint import CheckpointError
from fastreid.utils.errors import INPUT_ERRORS, debug_enabled, is_input_error, message_of, print_error
from fastreid.utils.file_io import remove_stale_temporaries
from fastreid.utils.logger import setup_logger

from .defaults import default_setup, setup_cfg
from .launch import launch
from .preflight import PreflightError, PreflightReport, preflight, remove_stale_result
from .run_checks import NOT_CHECKED, run_checks
from .stages import has_stages, plan_stages, previous_stage_weights, run_stages, stage_config
from .trainer import DefaultTrainer

logger = logging.getLogger(__name__)

__all__ = ["check_config", "run_preflight", "run_command", "train_main", "test_main", "build_eval_model",
           "evaluate", "eval_config"]

# Errors that describe bad input (an unreadable image included): the message names the file, line or key,
# a traceback adds nothing (FASTREID_DEBUG=1 prints it).
USER_ERRORS = (ConfigError, PreflightError, CheckpointError) + INPUT_ERRORS


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


def _planned_runs(args: argparse.Namespace) -> List[Tuple[str, CfgNode, bool]]:
    """(label, config, weights checked) of every run the command makes, in order."""
    if has_stages(args.config_file):
        if args.eval_only:
            return [("", _eval_stage_cfg(args), True)]
        stages = plan_stages(args.config_file, args.opts or [])
        runs = []
        for st in stages:
            cfg = stage_config(st, args.opts or [], stages[st.index - 1] if st.index else None)
            label = f"Stage {st.index + 1} ({os.path.basename(st.config_file)}): "
            runs.append((label, cfg, st.index == 0))
        return runs
    return [("", setup_cfg(args), True)]


def run_preflight(args: argparse.Namespace) -> PreflightReport:
    """Parse every config of the command and run :func:`preflight` on each (every stage, before any runs).

    Raises:
        ConfigError: a config file or override is invalid.
    """
    report = PreflightReport()
    for label, cfg, check_weights in _planned_runs(args):
        train = not args.eval_only
        # A finished stage is skipped under --resume; a later stage's weights come from the one before.
        resume = bool(args.resume) and train
        part = preflight(cfg, train=train, evaluate=True, resume=resume, check_weights=check_weights)
        part.extend(run_checks(cfg, train=train, check_weights=check_weights,
                               read_weights=bool(getattr(args, "check", False))))
        report.extend(part, label)
    return report


def _failure_text(report: PreflightReport, what: str, listed_above: bool = False) -> str:
    """The problems of ``report`` and their headline (printed last, as the ``Error:`` line): the problem itself
    when there is one, else the count and the first. ``listed_above``: only the headline."""
    if listed_above:
        first = report.errors[0].splitlines()[0].rstrip(":")
        count = f"{len(report.errors)} problems, listed above; the first: " if len(report.errors) > 1 else ""
        return f"{what} failed: {count}{first}"
    if len(report.errors) == 1:
        head, _, rest = report.errors[0].partition("\n")
        return f"{head.rstrip(':')} ({what}; nothing was run)" + (f"\n{rest}" if rest else "")
    listed = "\n".join(f"  - {e}" for e in report.errors)
    first = report.errors[0].splitlines()[0]
    return f"{len(report.errors)} problems found ({what}; nothing was run), the first: {first}\n{listed}"


def check_config(args: argparse.Namespace) -> None:
    """Everything before the work: configs, preflight; with ``--check`` print the summary and exit 0/1.

    Bad input exits non-zero with a message naming the key, file or line.
    """
    if not args.config_file:
        raise SystemExit("--config-file is required (e.g. --config-file "
                         "configs/patent/sbs_R101-ibn_patent_256.yml); the bare defaults are never what was meant")
    if not os.environ.get("RANK") or os.environ.get("RANK") == "0":
        setup_logger()
    try:
        report = run_preflight(args)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    if getattr(args, "check", False):
        report.not_checked = list(NOT_CHECKED)
        print(report.summary())
        if not report.ok:
            raise SystemExit(_failure_text(report, "--check", listed_above=True))
        raise SystemExit(0)
    report.log_warnings()
    if not report.ok:
        raise SystemExit(_failure_text(report, "preflight"))
    args.preflight_done = True


def _ensure_preflight(args: argparse.Namespace) -> None:
    """Run the preflight when the caller (the demo, a test) did not go through :func:`check_config`."""
    if getattr(args, "preflight_done", False):
        return
    report = run_preflight(args)
    report.log_warnings()
    report.raise_if_failed()
    args.preflight_done = True


def evaluate(cfg: CfgNode) -> Dict[str, Any]:
    """Load ``MODEL.WEIGHTS`` and run ``DefaultTrainer.test`` on every ``DATASETS.TESTS`` set."""
    cfg = eval_config(cfg)
    model = build_eval_model(cfg)
    if comm.is_main_process():
        remove_stale_result(cfg)
    comm.synchronize()
    return DefaultTrainer.test(cfg, model)


def _train_one(cfg: CfgNode, args: argparse.Namespace, resume: bool) -> Dict[str, Any]:
    default_setup(cfg, args)
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        for path in remove_stale_temporaries(cfg.OUTPUT_DIR):
            logger.info("Removed %s, left by an interrupted write", path)
    trainer = DefaultTrainer(cfg)
    if resume and not trainer.checkpointer.has_checkpoint():
        logger.warning("=" * 80)
        logger.warning(f"--resume given but {os.path.abspath(cfg.OUTPUT_DIR)} holds no checkpoint to resume from "
                       f"(no last_checkpoint): training STARTS FROM SCRATCH")
        logger.warning("=" * 80)
    trainer.resume_or_load(resume=resume)
    results = trainer.train()
    # Rank 0 writes the final checkpoint; nobody reads it before it is there.
    comm.synchronize()
    return results


def train_main(args: argparse.Namespace) -> Dict[str, Any]:
    """Body of ``tools/train_net.py`` in every process: evaluate only, train one config, or run the stages."""
    _ensure_preflight(args)
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


def run_command(main: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> None:
    """Preflight, then ``main`` in every process; errors exit non-zero, each traceback printed once.

    Every failure ends in one ``Error:`` line (:mod:`fastreid.utils.errors`). Bad input (config, preflight,
    checkpoint, a missing or unreadable file) prints its message only; an error already logged with its
    traceback by the training loop is not printed a second time; any other error is a bug of ours and
    prints its traceback.
    """
    try:
        check_config(args)
    except SystemExit as e:
        if isinstance(e.code, str):
            print_error(e.code)
            raise SystemExit(1) from None
        raise
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except Exception as e:
        if getattr(e, "fastreid_logged", False):
            print_error(f"{message_of(e)} (stopped by {type(e).__name__}; traceback above and in OUTPUT_DIR/log.txt)")
            raise SystemExit(1) from None
        expected = is_input_error(e, USER_ERRORS)
        if not expected or debug_enabled():
            traceback.print_exc()
        if not expected:
            print_error(f"unexpected {type(e).__name__}: {message_of(e)} (a bug in fastreid: please report it "
                        f"with the traceback above)")
        else:
            print_error(message_of(e))
        raise SystemExit(1) from None
