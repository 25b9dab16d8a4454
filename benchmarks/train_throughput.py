#!/usr/bin/env python
"""Training images/s of a config with the speed switches off and on, in one run, as a table.

    python benchmarks/train_throughput.py --config-file configs/demo/demo_R18-ibn_64.yml
    python benchmarks/train_throughput.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml \
        --iters 20 SOLVER.IMS_PER_BATCH 128
    python benchmarks/train_throughput.py --config-file configs/demo/demo_R18-ibn_64.yml --loader \
        --loader-data /tmp/bench_patents --loader-image-size 1024

Every variant is a ``DefaultTrainer`` built from the config with its switches set (model, optimizer,
``wrap_model``, mixed precision, GradScaler, cuDNN autotuning from ``CUDNN_BENCHMARK``: the trainer's
own code path) whose loader is replaced by one random P x K batch of ``INPUT.SIZE_TRAIN`` kept on the
device, and whose hooks are dropped (no schedule, writers or checkpoints), so the numbers are the
training step alone. Each variant sets all three switches (AMP, channels_last, compile), whatever the
config says. Layer freezing is not applied: the step of the unfrozen model is measured. A variant
that fails (e.g. torch.compile without a compiler) is reported with its error.

``--loader`` adds rows for the real data path: a synthetic data set of PNG drawings at
``--loader-image-size`` px is written once to ``--loader-data``, then the training loader alone is
timed (decode + augmentation with ``DATALOADER.NUM_WORKERS`` workers), on the original PNGs and, after
``tools/prepare_dataset.py``, on the resized copy; then one step variant fed by the real loader.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid.config import CfgNode, ConfigError, get_cfg  # noqa: E402
from fastreid.engine.trainer import DefaultTrainer  # noqa: E402

_OFF = {"SOLVER.AMP.ENABLED": False, "SOLVER.CHANNELS_LAST": False, "SOLVER.COMPILE": False}
VARIANTS: Dict[str, Dict[str, object]] = {
    "baseline": {},
    "amp": {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "float16"},
    "amp_bf16": {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "bfloat16"},
    "channels_last": {"SOLVER.CHANNELS_LAST": True},
    "compile": {"SOLVER.COMPILE": True},
    "amp_cl": {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "float16", "SOLVER.CHANNELS_LAST": True},
    "all": {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "float16", "SOLVER.CHANNELS_LAST": True,
            "SOLVER.COMPILE": True},
    "all_bf16": {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.DTYPE": "bfloat16", "SOLVER.CHANNELS_LAST": True,
                 "SOLVER.COMPILE": True},
}
DEFAULT_VARIANTS = ["baseline", "amp", "channels_last", "compile", "all"]


class _Stream:
    """The same batch forever, with the ``dataset`` attribute the trainer reads (length, classes)."""

    def __init__(self, batch: Dict[str, torch.Tensor], num_classes: int) -> None:
        self.batch = batch
        self.dataset = type("BenchDataset", (), {"num_classes": num_classes, "__len__": lambda s: 10 ** 6})()

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        return itertools.repeat(self.batch)


class _StepTrainer(DefaultTrainer):
    """The trainer of the config with its hooks dropped; ``synthetic`` replaces the loader by one batch."""

    synthetic = True
    num_classes = 100

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, start_iter: int = 0) -> Any:
        if not cls.synthetic:
            return super().build_train_loader(cfg, start_iter)
        g = torch.Generator().manual_seed(0)
        n, k = cfg.SOLVER.IMS_PER_BATCH, max(1, cfg.DATALOADER.NUM_INSTANCE)
        h, w = cfg.INPUT.SIZE_TRAIN
        device = torch.device(cfg.MODEL.DEVICE if torch.cuda.is_available() else "cpu")
        batch = {"images": (torch.rand(n, 3, h, w, generator=g) * 255).to(device),
                 "targets": (torch.arange(n) // k % cls.num_classes).to(device)}
        return _Stream(batch, cls.num_classes)

    def build_hooks(self) -> list:
        return []


def variant_cfg(base: CfgNode, overrides: Dict[str, object]) -> CfgNode:
    """``base`` with every switch off, then ``overrides``; fp16 falls back to bf16 without CUDA."""
    cfg = base.clone()
    cfg.defrost()
    cfg.merge_from_list([x for kv in {**_OFF, **overrides}.items() for x in (kv[0], str(kv[1]))])
    if cfg.SOLVER.AMP.ENABLED and not torch.cuda.is_available():
        cfg.SOLVER.AMP.DTYPE = "bfloat16"
    cfg.freeze()
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg: CfgNode, warmup: int, iters: int, synthetic: bool = True) -> float:
    """Images per second of ``iters`` timed training steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    _StepTrainer.synthetic = synthetic
    trainer = _StepTrainer(cfg)
    super(DefaultTrainer, trainer).train(0, warmup, max(1, warmup))
    _sync(trainer.device)
    start = time.perf_counter()
    super(DefaultTrainer, trainer).train(warmup, warmup + iters, max(1, iters))
    _sync(trainer.device)
    speed = cfg.SOLVER.IMS_PER_BATCH * iters / (time.perf_counter() - start)
    del trainer  # free the model, optimizer state and cached blocks before the next variant
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return speed


def profile(cfg: CfgNode, warmup: int, iters: int, rows: int = 25) -> str:
    """torch.profiler's table of the operators that took the most device (else CPU) time over ``iters``
    training steps after ``warmup`` untimed ones."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    _StepTrainer.synthetic = True
    trainer = _StepTrainer(cfg)
    super(DefaultTrainer, trainer).train(0, warmup, max(1, warmup))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        super(DefaultTrainer, trainer).train(warmup, warmup + iters, max(1, iters))
        _sync(trainer.device)
    key = "cuda_time_total" if trainer.device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def measure_loader(cfg: CfgNode, batches: int) -> float:
    """Images per second of the training loader alone (after its first batch: workers started)."""
    it = iter(DefaultTrainer.build_train_loader(cfg))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return cfg.SOLVER.IMS_PER_BATCH * batches / (time.perf_counter() - start)


def loader_rows(cfg: CfgNode, args: argparse.Namespace) -> List[List[str]]:
    """Loader-alone rows on the original PNGs and on a prepared copy, then a step fed by the loader."""
    from fastreid.data.build import _loader_kwargs
    from fastreid.data.prepare import prepare_dataset
    from fastreid.data.synthetic import SyntheticSpec, generate

    root = args.loader_data
    if not os.path.isfile(os.path.join(root, "synthetic_info.json")):
        generate(root, SyntheticSpec(num_patents=args.loader_patents, image_size=args.loader_image_size, seed=0))
    base = cfg.clone()
    base.defrost()
    base.merge_from_list(["DATASETS.ROOT", root, "DATASETS.NAMES", '("DeepPatent",)', "MODEL.HEADS.NUM_CLASSES", "0"])
    rows = []
    for prepared in ("never", "always"):
        c = base.clone()
        c.DATASETS.PREPARED = prepared
        if prepared == "always":
            prepare_dataset(c, [tuple(c.INPUT.SIZE_TRAIN)])
        c.freeze()
        what = f"PNG {args.loader_image_size} px" if prepared == "never" else \
            f"prepared {c.INPUT.SIZE_TRAIN[0]}x{c.INPUT.SIZE_TRAIN[1]} copy"
        speed = measure_loader(c, args.loader_batches)
        rows.append([f"loader only ({what})", f"workers={_loader_kwargs(c)['num_workers']}", f"{speed:.1f}", ""])
        print(f"loader ({what}): {speed:.1f} images/s", flush=True)
    base.DATASETS.PREPARED = "always"
    c = variant_cfg(base, VARIANTS[args.loader_variant])
    speed = measure(c, args.warmup, args.iters, synthetic=False)
    rows.append([f"{args.loader_variant} + loader (prepared copy)", "real batches", f"{speed:.1f}", ""])
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (compile happens here)")
    parser.add_argument("--num-classes", type=int, default=100, help="classifier size of the step variants")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--loader", action="store_true", help="also time the real loader on PNG drawings")
    parser.add_argument("--loader-data", default=os.path.join(tempfile.gettempdir(), "fastreid_loader_bench"),
                        help="folder of the synthetic PNG data set (written once, reused)")
    parser.add_argument("--loader-image-size", type=int, default=1024, help="side of the drawings on disk")
    parser.add_argument("--loader-patents", type=int, default=60, help="patents of the synthetic data set")
    parser.add_argument("--loader-batches", type=int, default=5, help="timed loader batches")
    parser.add_argument("--loader-variant", default="baseline", choices=list(VARIANTS),
                        help="step variant fed by the real loader")
    parser.add_argument("--profile", default="", choices=[""] + list(VARIANTS),
                        help="also profile this variant (torch.profiler, top operators) after the table")
    parser.add_argument("--output", default="", help="also write the table (markdown) to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts or [])
    except ConfigError as e:
        raise SystemExit(f"Config error: {e}") from None
    cfg.MODEL.BACKBONE.PRETRAIN = False  # speed does not depend on the initial weights
    cfg.OUTPUT_DIR = tempfile.mkdtemp(prefix="train_throughput_")  # nothing is written there
    cfg.freeze()
    _StepTrainer.num_classes = args.num_classes

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
    if args.loader:
        rows += loader_rows(cfg, args)
    device = "cuda (" + torch.cuda.get_device_name() + ")" if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    h, w = cfg.INPUT.SIZE_TRAIN
    title = (f"{args.config_file}: batch {cfg.SOLVER.IMS_PER_BATCH}, {h}x{w}, {device}, torch {torch.__version__}, "
             f"cudnn.benchmark={cfg.CUDNN_BENCHMARK}, {args.iters} timed iterations after {args.warmup} warmup")
    table = tabulate(rows, headers=["variant", "switches", "images/s", "vs baseline"], tablefmt="pipe")
    report = f"{title}\n\n{table}\n"
    if args.profile:
        report += (f"\nProfile of {args.profile} ({args.iters} steps, torch.profiler, top operators):\n\n```\n"
                   f"{profile(variant_cfg(cfg, VARIANTS[args.profile]), args.warmup, args.iters)}\n```\n")
    print(f"\n{report}")
    if args.output:
        from fastreid.utils.file_io import atomic_open

        with atomic_open(args.output, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
