#!/usr/bin/env python
"""Does synthetic pretraining help on shape families it has never seen? One run, one table.

    python benchmarks/pretrain_transfer.py                       # about 15 minutes on 2 idle cores
    python benchmarks/pretrain_transfer.py --tiny                # the whole pipeline in about a minute

1. Generates a pretraining set (scanned-sheet style, families with base shapes box, chamfer_box,
   rounded_box, L, U, T) and a target set (another seed, sheet style, families with base shapes
   cylinder and hexagon only): no family, object or base shape is shared.
2. Pretrains ResNet18-IBN-a at 64 px on the first (``configs/pretrain/synthetic_R18-ibn_64.yml``).
3. Fine-tunes on the target set's training split from random initialisation and from the pretrained
   backbone (same recipe, same epochs, each seed), and evaluates both on the target validation split.
Prints a table of val mAP / mAP@10 / Rank-1 (mean and spread over seeds), and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from benchmarks.seed_table import METRICS, seed_cells, test_set_metrics  # noqa: E402
from fastreid.data.synthetic.drawing_sheet import SHEET_EFFECTS  # noqa: E402
from fastreid.data.synthetic import SyntheticSpec, generate  # noqa: E402
from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import train_main  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

PRETRAIN_KINDS = ("box", "chamfer_box", "rounded_box", "L", "U", "T")
TARGET_KINDS = ("cylinder", "hexagon")
PRETRAIN_CONFIG = os.path.join(ROOT, "configs/pretrain/synthetic_R18-ibn_64.yml")


def _train(config: str, output: str, opts: List[str]) -> Dict[str, float]:
    args = default_argument_parser().parse_args(["--config-file", config, *opts, "OUTPUT_DIR", output])
    return test_set_metrics(train_main(args))


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(ROOT, "logs/bench_pretrain"), help="data and runs")
    parser.add_argument("--pretrain-patents", type=int, default=3000)
    parser.add_argument("--target-patents", type=int, default=600)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tiny", action="store_true", help="a minute-long run of the whole pipeline")
    args = parser.parse_args(argv)
    if args.tiny:
        args.pretrain_patents, args.target_patents = 40, 30
        args.pretrain_epochs, args.finetune_epochs, args.seeds = 1, 1, [0]
    os.makedirs(args.work, exist_ok=True)
    setup_logger(args.work)
    size = 32 if args.tiny else 96
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = os.path.join(args.work, f"runs-{stamp}")
    data = {}
    for name, n, seed, kinds, train_fraction in (("pretrain", args.pretrain_patents, 100, PRETRAIN_KINDS, 0.9),
                                                 ("target", args.target_patents, 101, TARGET_KINDS, 0.6)):
        folder = os.path.join(args.work, f"{name}-{n}-{size}px")
        if not os.path.isfile(os.path.join(folder, "synthetic_info.json")):
            val_fraction = min(0.2, 1 - train_fraction - 0.05)
            generate(folder, SyntheticSpec(num_patents=n, image_size=size, seed=seed, effects=SHEET_EFFECTS,
                                           base_kinds=kinds, train_fraction=train_fraction,
                                           val_fraction=val_fraction))
        data[name] = folder
    small = ["INPUT.SIZE_TRAIN", "[32, 32]", "INPUT.SIZE_TEST", "[32, 32]", "SOLVER.IMS_PER_BATCH", "16",
             "TEST.IMS_PER_BATCH", "32", "DATALOADER.NUM_WORKERS", "0"] if args.tiny else []
    start = time.perf_counter()
    pretrain_dir = os.path.join(runs, "pretrain")
    _train(PRETRAIN_CONFIG, pretrain_dir, ["DATASETS.ROOT", data["pretrain"], "SOLVER.MAX_EPOCH",
                                           str(args.pretrain_epochs), "TEST.EVAL_PERIOD", "0", *small])
    pretrain_s = time.perf_counter() - start
    weights = os.path.join(pretrain_dir, "model_final.pth")
    finetune = os.path.join(ROOT, "configs/demo/demo_R18-ibn_64.yml")
    rows: Dict[str, List[Dict[str, float]]] = {"random init": [], "synthetic pretraining": []}
    for seed in args.seeds:
        for label, init in (("random init", []),
                            ("synthetic pretraining", ["MODEL.BACKBONE.PRETRAIN", "True",
                                                       "MODEL.BACKBONE.PRETRAIN_PATH", weights])):
            out = os.path.join(runs, f"{label.replace(' ', '_')}-seed{seed}")
            rows[label].append(_train(finetune, out, ["DATASETS.ROOT", data["target"], "SEED", str(seed),
                                                      "SOLVER.MAX_EPOCH", str(args.finetune_epochs),
                                                      "TEST.EVAL_PERIOD", "0", *init, *small]))
    table = [[label, *seed_cells(res)] for label, res in rows.items()]
    text = tabulate(table, headers=["fine-tuning from"] + [f"val {m}" for m in METRICS], tablefmt="pipe")
    print(f"Target: {args.target_patents} patents, base shapes {', '.join(TARGET_KINDS)} (held out); "
          f"pretraining: {args.pretrain_patents} patents, {args.pretrain_epochs} epochs ({pretrain_s:.0f} s); "
          f"fine-tuning: {args.finetune_epochs} epochs; seeds {args.seeds}; mean ± half range")
    print(text)
    with open(os.path.join(runs, "pretrain_transfer.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "pretrain_seconds": pretrain_s, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
