"""Command-line parsing and run set-up shared by every tool (fast-reid's conventions)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional

import torch

from fastreid.config import CfgNode, ConfigError, get_cfg
from fastreid.utils import comm
from fastreid.utils.env import resolve_seed
from fastreid.utils.env import seed_all_rng as seed_all
from fastreid.utils.file_io import atomic_open
from fastreid.utils.logger import setup_logger
from fastreid.utils.dist_checks import check_shared_folder


class _OverridesParser(argparse.ArgumentParser):
    """Accepts options anywhere: ``--eval-only`` or ``--resume`` typed after ``KEY VALUE`` pairs (which
    argparse would swallow into the overrides) are taken out of them and parsed as options."""

    def parse_args(self, args: Optional[List[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        ns = super().parse_args(args, namespace)
        opts, late = list(ns.opts or []), []
        kept: List[str] = []
        i = 0
        while i < len(opts):
            name = opts[i].split("=", 1)[0]
            action = self._option_string_actions.get(name) if opts[i].startswith("--") else None
            if action is None:
                kept.append(opts[i])
                i += 1
                continue
            takes_value = action.nargs != 0 and "=" not in opts[i]
            late += opts[i:i + 1 + int(takes_value)]
            i += 1 + int(takes_value)
        ns.opts = kept
        if late:
            ns = super().parse_args(late, ns)
            ns.opts = kept
        return ns


def default_argument_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of ``tools/train_net.py`` and ``tools/test.py``; ``KEY VALUE`` pairs override the config.

    Values follow yacs' rule (a Python literal if it parses, else the string as typed); options may
    also follow the pairs.
    """
    parser = _OverridesParser(
        description=description or "fastreid training and evaluation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  python tools/train_net.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml\n"
               "  python tools/train_net.py --config-file X.yml --eval-only MODEL.WEIGHTS logs/x/model_best.pth\n"
               "  python tools/train_net.py --config-file X.yml --num-gpus 4 SOLVER.BASE_LR 0.0007\n",
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the config file")
    parser.add_argument("--resume", action="store_true",
                        help="resume from OUTPUT_DIR/last_checkpoint (model, optimizer, schedulers, iteration, RNG)")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument("--check", action="store_true",
                        help="only run the preflight checks (config, datasets, listed files, weights, output "
                             "folders), print a summary and exit 0 (all fine) or 1")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (one per GPU; gloo on CPU)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                        help="rendezvous address of process 0; 'env://' under torchrun")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.IMS_PER_BATCH 32")
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Defaults, then the config file, then the command-line pairs; errors exit non-zero with the message."""
    cfg = get_cfg()
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts or [])
    except ConfigError as e:
        raise SystemExit(f"Config error: {e}") from None
    cfg.freeze()
    return cfg


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Refuse an OUTPUT_DIR that is not one folder for all processes (training on several machines,
    :func:`~fastreid.utils.dist_checks.check_shared_folder`), create it, set up logging, write
    ``config.yaml`` (``config_eval.yaml`` for ``--eval-only``; rank 0), seed and set cuDNN."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if output_dir and not getattr(args, "eval_only", False):
        check_shared_folder(output_dir, "OUTPUT_DIR", "Rank 0 writes the checkpoints there and every process "
                                                      "reads last_checkpoint from it on --resume. ")
    if output_dir and comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(output_dir, distributed_rank=rank)
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    logger.info("Command line arguments: " + str(args))
    if getattr(args, "config_file", ""):
        logger.info(f"Contents of config file {args.config_file}:\n{open(args.config_file, encoding='utf-8').read()}")
    if cfg.SEED < 0:
        # One concrete seed, recorded in config.yaml and the checkpoints, so that a resume reuses it.
        resume = bool(getattr(args, "resume", False)) and not getattr(args, "eval_only", False)
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.SEED = resolve_seed(cfg.SEED, output_dir, resume=resume)
        if frozen:
            cfg.freeze()
    if output_dir and comm.is_main_process():
        # An evaluation into a training run's folder must not replace the config that reproduces the training.
        path = os.path.join(output_dir, "config_eval.yaml" if getattr(args, "eval_only", False) else "config.yaml")
        with atomic_open(path, "w") as f:
            f.write(cfg.dump())
        logger.info(f"Full config saved to {os.path.abspath(path)}")
    seed = seed_all(cfg.SEED + rank)
    logger.info(f"Using seed {seed}")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def __getattr__(name: str) -> Any:
    # fast-reid's projects import the trainer and predictor from here; they live in their own modules,
    # which import this one, so they are looked up on first use.
    if name in ("DefaultTrainer", "TrainerBase", "DefaultPredictor"):
        import fastreid.engine as engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
