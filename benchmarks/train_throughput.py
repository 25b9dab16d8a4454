#!/usr/bin/env python
"""Training images/s of a config with each speed switch off and on, in one run, as a table.

    python benchmarks/train_throughput.py --config-file configs/demo/demo_R18-ibn_64.yml
    python benchmarks/train_throughput.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml \
        --iters 20 SOLVER.IMS_PER_BATCH 64

Rows: all switches off, then mixed precision (fp16 + GradScaler on CUDA, bf16 autocast on CPU),
channels_last and torch.compile one at a time, then all on. The batch is random images of
INPUT.SIZE_TRAIN with P x K identity structure (no data loading), so the numbers are the model's
forward + backward + optimizer step. A variant that fails (e.g. torch.compile without a compiler)
is reported with its error instead of stopping the run.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Dict, Iterator, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid.config import CfgNode, ConfigError, get_cfg  # noqa: E402
from fastreid.engine.train_loop import SimpleTrainer  # noqa: E402
from fastreid.engine.trainer import DefaultTrainer  # noqa: E402
from fastreid.solver import build_optimizer  # noqa: E402

VARIANTS = {
    "baseline": {},
    "amp": {"SOLVER.AMP.ENABLED": True},
    "channels_last": {"SOLVER.CHANNELS_LAST": True},
    "compile": {"SOLVER.COMPILE": True},
    "all": {"SOLVER.AMP.ENABLED": True, "SOLVER.CHANNELS_LAST": True, "SOLVER.COMPILE": True},
}


def synthetic_batches(cfg: CfgNode, device: torch.device) -> Iterator[Dict[str, torch.Tensor]]:
    """The same random P x K batch forever (IMS_PER_BATCH images, NUM_INSTANCE per identity)."""
    g = torch.Generator().manual_seed(0)
    n, k = cfg.SOLVER.IMS_PER_BATCH, max(1, cfg.DATALOADER.NUM_INSTANCE)
    h, w = cfg.INPUT.SIZE_TRAIN
    batch = {"images": (torch.rand(n, 3, h, w, generator=g) * 255).to(device),
             "targets": (torch.arange(n) // k % cfg.MODEL.HEADS.NUM_CLASSES).to(device)}
    return itertools.repeat(batch)


def variant_cfg(base: CfgNode, overrides: Dict[str, object]) -> CfgNode:
    cfg = base.clone()
    cfg.defrost()
    cfg.merge_from_list([x for kv in overrides.items() for x in (kv[0], str(kv[1]))])
    if cfg.SOLVER.AMP.ENABLED and not torch.cuda.is_available():
        cfg.SOLVER.AMP.DTYPE = "bfloat16"
    cfg.freeze()
    return cfg


def measure(cfg: CfgNode, warmup: int, iters: int) -> float:
    """Images per second of ``iters`` timed training steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    module = DefaultTrainer.build_model(cfg)
    device = next(module.parameters()).device
    model = DefaultTrainer.wrap_model(cfg, module)
    trainer = SimpleTrainer(model, synthetic_batches(cfg, device), build_optimizer(cfg, module), device=device,
                            amp_enabled=cfg.SOLVER.AMP.ENABLED, amp_dtype=cfg.SOLVER.AMP.DTYPE,
                            channels_last=cfg.SOLVER.CHANNELS_LAST)
    trainer.train(0, warmup, max(1, warmup))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train(warmup, warmup + iters, max(1, iters))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return cfg.SOLVER.IMS_PER_BATCH * iters / (time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (compile happens here)")
    parser.add_argument("--num-classes", type=int, default=100, help="classifier size when the config says 0")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts or [])
    except ConfigError as e:
        raise SystemExit(f"Config error: {e}") from None
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:
        cfg.MODEL.HEADS.NUM_CLASSES = args.num_classes
    cfg.MODEL.BACKBONE.PRETRAIN = False  # speed does not depend on the initial weights
    cfg.freeze()

    rows, base_speed = [], None
    for name in args.variants:
        vcfg = variant_cfg(cfg, VARIANTS[name])
        switches = f"amp={vcfg.SOLVER.AMP.DTYPE if vcfg.SOLVER.AMP.ENABLED else 'off'} " \
                   f"channels_last={vcfg.SOLVER.CHANNELS_LAST} compile={vcfg.SOLVER.COMPILE}"
        try:
            speed = measure(vcfg, args.warmup, args.iters)
        except Exception as e:  # report the failure of one variant and go on with the others
            rows.append([name, switches, "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"])
            continue
        base_speed = base_speed or (speed if name == "baseline" else None)
        rel = f"{speed / base_speed:.2f}x" if base_speed else ""
        rows.append([name, switches, f"{speed:.1f}", rel])
        print(f"{name}: {speed:.1f} images/s", flush=True)
    device = "cuda (" + torch.cuda.get_device_name() + ")" if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    h, w = cfg.INPUT.SIZE_TRAIN
    print(f"\n{args.config_file}: batch {cfg.SOLVER.IMS_PER_BATCH}, {h}x{w}, {device}, "
          f"{args.iters} timed iterations after {args.warmup} warmup\n")
    print(tabulate(rows, headers=["variant", "switches", "images/s", "vs baseline"], tablefmt="pipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
