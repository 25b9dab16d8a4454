#!/usr/bin/env python
"""Which training recipe learns most from few drawings? Named recipes, one budget, one table.

    python benchmarks/recipes.py                                  # about 30 minutes on 2 idle cores
    python benchmarks/recipes.py --recipes demo demo+rot90 ...    # any subset (see --list)
    python benchmarks/recipes.py --tiny                           # the whole pipeline in about a minute
    python benchmarks/recipes.py --dataset datasets/object_patents_512 --recipes pixels original bagtricks \
        bagtricks+ink                                             # real objects (tools/make_object_patents.py)

Data: the hard synthetic set (scanned-sheet style: every effect of ``--style sheet``) with held-out
shape families: patents whose base shape is a cylinder or a hexagon appear only in validation and
test, so the validation split scores objects of shapes no model has trained on. ``--dataset`` scores
any DeepPatent-layout root instead, e.g. the real-object set of ``tools/make_object_patents.py``; prepared
copies at each recipe's size and resize mode are written once into it, so no run decodes large sheets.

Budget: every recipe trains ResNet18-IBN-a from random initialisation at 64 px for the same number of
epochs and batch size (the same images seen; wall time is printed too), then scores the validation
split without query expansion. The original challenge recipe (``configs/patent/sbs_R101-ibn_patent_256.yml``)
is scaled to that budget: its epoch keys (``MAX_EPOCH``, ``STEPS``, ``DELAY_EPOCHS``) shrink by the same
factor, and its iteration keys (``WARMUP_ITERS``, ``FREEZE_ITERS``) keep their share of the run they were
written for (70 epochs of 254,787 images in batches of 128). It is scored once more with its own test
configuration (AQE, k 5, alpha 2).

Prints val mAP / mAP@10 / Rank-1 (mean ± half the range over seeds) and writes everything as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.seed_table import METRICS, seed_cells, test_set_metrics  # noqa: E402
from fastreid.config import get_cfg  # noqa: E402
from fastreid.data.prepare import prepare_dataset, prepared_dir  # noqa: E402
from fastreid.data.synthetic import SyntheticSpec, generate  # noqa: E402
from fastreid.data.synthetic.shapes import BASE_KINDS  # noqa: E402
from fastreid.data.synthetic.drawing_sheet import SHEET_EFFECTS  # noqa: E402
from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import evaluate, train_main  # noqa: E402
from fastreid.engine.defaults import setup_cfg  # noqa: E402
from fastreid.evaluation.baselines import PixelFeatures, evaluate_features  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

HOLDOUT_KINDS = ("cylinder", "hexagon")
PRETRAIN_KINDS = tuple(k for k in BASE_KINDS if k not in HOLDOUT_KINDS)
PRETRAIN_CONFIG = "configs/pretrain/synthetic_R18-ibn_64.yml"
ORIGINAL = "configs/patent/sbs_R101-ibn_patent_256.yml"
DEMO = "configs/demo/demo_R18-ibn_64.yml"
# The original run the iteration keys were written for: 70 epochs of DeepPatent's training list.
ORIGINAL_EPOCHS, ORIGINAL_ITERS_PER_EPOCH = 70, 254787 // 128
NO_DRAWING = ["INPUT.DRAWING.LINE_PROB", "0.0", "INPUT.DRAWING.INK_PROB", "0.0", "INPUT.DRAWING.CROP_PROB", "0.0",
              "INPUT.DRAWING.ROT90_PROB", "0.0", "INPUT.DRAWING.VFLIP_PROB", "0.0"]


@dataclass
class Recipe:
    """A config file plus overrides; ``original``: scale the original's schedule to the budget."""

    config: str
    about: str
    opts: List[str] = field(default_factory=list)
    original: bool = False
    pretrained: bool = False
    # No training: the raw-pixel baseline scored with the recipe's test settings.
    pixels: bool = False
    # Epochs as a multiple of --epochs (more budget; every other recipe keeps 1).
    epoch_factor: float = 1.0


RECIPES: Dict[str, Recipe] = {
    "original": Recipe(ORIGINAL, "the challenge's 256 px recipe, scaled to ResNet18-IBN, this size and budget",
                       original=True),
    "original+lr": Recipe(ORIGINAL, "original, one change: Adam lr 3e-3 (ours) instead of 3.5e-4",
                          ["SOLVER.BASE_LR", "0.003"], original=True),
    "original-aug": Recipe(ORIGINAL, "original, one change: no AutoAugment, no random erasing",
                           ["INPUT.AUTOAUG.ENABLED", "False", "INPUT.REA.ENABLED", "False"], original=True),
    "original+pk": Recipe(ORIGINAL, "original, one change: 4 drawings per patent in a batch (16 patents), not 16",
                          ["DATALOADER.NUM_INSTANCE", "4"], original=True),
    "bagtricks": Recipe(DEMO, "the demo recipe (configs/demo) without drawing augmentation", NO_DRAWING),
    "demo+line": Recipe(DEMO, "bagtricks + line-width jitter", NO_DRAWING + ["INPUT.DRAWING.LINE_PROB", "0.5"]),
    "demo+ink": Recipe(DEMO, "bagtricks + ink/paper jitter", NO_DRAWING + ["INPUT.DRAWING.INK_PROB", "0.5"]),
    "demo+crop": Recipe(DEMO, "bagtricks + crop-and-rescale", NO_DRAWING + ["INPUT.DRAWING.CROP_PROB", "0.5"]),
    "demo+rot90": Recipe(DEMO, "bagtricks + quarter turns", NO_DRAWING + ["INPUT.DRAWING.ROT90_PROB", "0.5"]),
    "demo+vflip": Recipe(DEMO, "bagtricks + vertical flip", NO_DRAWING + ["INPUT.DRAWING.VFLIP_PROB", "0.5"]),
    "demo": Recipe(DEMO, "the shipped demo config as it is (its INPUT.DRAWING settings included)"),
    "pretrained": Recipe(DEMO, "bagtricks from the synthetic pretraining backbone (other seed, no held-out shape)",
                         NO_DRAWING, pretrained=True),
    "pixels": Recipe(DEMO, "raw pixels at the test size, cosine (no training)", pixels=True),
    "pixels+ink": Recipe(DEMO, "raw pixels shrunk with the ink-preserving resize", ["INPUT.RESIZE_MODE", "ink"],
                         pixels=True),
    "original+ink": Recipe(ORIGINAL, "original, one change: ink-preserving resize", ["INPUT.RESIZE_MODE", "ink"],
                           original=True),
    "bagtricks+ink": Recipe(DEMO, "bagtricks, ink-preserving resize (INPUT.RESIZE_MODE ink)",
                            NO_DRAWING + ["INPUT.RESIZE_MODE", "ink"]),
    "bagtricks+area": Recipe(DEMO, "bagtricks, area-averaging resize", NO_DRAWING + ["INPUT.RESIZE_MODE", "area"]),
    "bagtricks@96": Recipe(DEMO, "bagtricks at 96 px", NO_DRAWING + ["INPUT.SIZE_TRAIN", "[96, 96]",
                                                                     "INPUT.SIZE_TEST", "[96, 96]"]),
    "bagtricks@128": Recipe(DEMO, "bagtricks at 128 px", NO_DRAWING + ["INPUT.SIZE_TRAIN", "[128, 128]",
                                                                       "INPUT.SIZE_TEST", "[128, 128]"]),
    "bagtricks+ink@128": Recipe(DEMO, "bagtricks, ink resize, 128 px",
                                NO_DRAWING + ["INPUT.RESIZE_MODE", "ink", "INPUT.SIZE_TRAIN", "[128, 128]",
                                              "INPUT.SIZE_TEST", "[128, 128]"]),
    "bagtricks+2x-epochs": Recipe(DEMO, "bagtricks, twice the epochs (twice the budget)", NO_DRAWING,
                                  epoch_factor=2.0),
    "bagtricks+batch128": Recipe(DEMO, "bagtricks, batches of 128 (half the iterations, same images seen)",
                                 NO_DRAWING + ["SOLVER.IMS_PER_BATCH", "128"]),
}
DEFAULT_RECIPES = ("original", "bagtricks", "pretrained")


def scaled_original(epochs: int, iters_per_epoch: int) -> List[str]:
    """Overrides that shrink the original recipe's schedule to ``epochs`` of ``iters_per_epoch``."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, ORIGINAL))
    s = cfg.SOLVER
    epoch_factor = epochs / ORIGINAL_EPOCHS
    iter_factor = epochs * iters_per_epoch / (ORIGINAL_EPOCHS * ORIGINAL_ITERS_PER_EPOCH)
    steps = [max(1, round(x * epoch_factor)) for x in s.STEPS]
    return ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
            "SOLVER.STEPS", str(steps), "SOLVER.DELAY_EPOCHS", str(round(s.DELAY_EPOCHS * epoch_factor)),
            "SOLVER.WARMUP_ITERS", str(max(1, round(s.WARMUP_ITERS * iter_factor))),
            "SOLVER.FREEZE_ITERS", str(round(s.FREEZE_ITERS * iter_factor)),
            "SOLVER.CHECKPOINT_PERIOD", str(epochs)]


def budget_opts(args: argparse.Namespace, data: str, seed: int) -> List[str]:
    """What every recipe shares: data, size, epochs, batch, device, seed; validation only, at the end."""
    size = f"[{args.size}, {args.size}]"
    return ["DATASETS.ROOT", data, "DATASETS.NAMES", '("DeepPatent",)', "DATASETS.TESTS", '("DeepPatent",)',
            "INPUT.SIZE_TRAIN", size, "INPUT.SIZE_TEST", size, "SOLVER.MAX_EPOCH", str(args.epochs),
            "SOLVER.IMS_PER_BATCH", str(args.batch), "SOLVER.AMP.ENABLED", "False", "MODEL.DEVICE", "cpu",
            "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.WEIGHTS", "", "TEST.EVAL_PERIOD", "0",
            "TEST.AQE.ENABLED", "False", "TEST.AQE.AUTO", "False", "TEST.IMS_PER_BATCH", "128",
            "DATALOADER.NUM_WORKERS", str(args.workers), "SEED", str(seed)]


def pretrain(args: argparse.Namespace) -> str:
    """The synthetic pretraining checkpoint (made once per setting, then reused): another seed, only
    the shapes the benchmark trains on, ``configs/pretrain/synthetic_R18-ibn_64.yml`` at ``--size``."""
    name = f"pretrain-{args.pretrain_patents}-{args.size}px-{args.pretrain_epochs}ep"
    weights = os.path.join(args.work, name, "model_final.pth")
    if os.path.isfile(weights):
        return weights
    data = os.path.join(args.work, f"pretrain-data-{args.pretrain_patents}-{args.size}px")
    if not os.path.isfile(os.path.join(data, "synthetic_info.json")):
        generate(data, SyntheticSpec(num_patents=args.pretrain_patents, image_size=args.size, seed=12,
                                     effects=SHEET_EFFECTS, base_kinds=PRETRAIN_KINDS, train_fraction=0.9,
                                     val_fraction=0.05))
    size = f"[{args.size}, {args.size}]"
    partial = os.path.dirname(weights) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted pretraining starts again
    cli = default_argument_parser().parse_args(
        ["--config-file", os.path.join(ROOT, PRETRAIN_CONFIG), "DATASETS.ROOT", data, "INPUT.SIZE_TRAIN", size,
         "INPUT.SIZE_TEST", size, "SOLVER.MAX_EPOCH", str(args.pretrain_epochs), "SOLVER.IMS_PER_BATCH",
         str(args.batch), "TEST.EVAL_PERIOD", "0", "TEST.AQE.AUTO", "False", "DATALOADER.NUM_WORKERS",
         str(args.workers), "OUTPUT_DIR", partial])
    start = time.perf_counter()
    train_main(cli)
    os.replace(partial, os.path.dirname(weights))
    print(f"Pretrained on {args.pretrain_patents} synthetic patents in {time.perf_counter() - start:.0f} s")
    return weights


def ensure_prepared(cfg) -> None:
    """Prepared copies of the data set at the run's sizes and resize mode, written once (``--dataset``)."""
    sizes = {tuple(int(v) for v in cfg.INPUT.SIZE_TRAIN), tuple(int(v) for v in cfg.INPUT.SIZE_TEST)}
    missing = [s for s in sorted(sizes) if not os.path.isfile(
        os.path.join(prepared_dir(cfg.DATASETS.ROOT, s, cfg.INPUT.RESIZE_MODE), "prepared.json"))]
    if missing:
        prepare_dataset(cfg, missing)


def run_recipe(name: str, args: argparse.Namespace, data: str, seed: int, out: str,
               iters_per_epoch: int) -> Dict[str, Any]:
    """Train one recipe with one seed; its validation metrics (and, for the original, with its AQE)."""
    recipe = RECIPES[name]
    epochs = max(1, round(args.epochs * recipe.epoch_factor))
    opts = list(recipe.opts)
    if recipe.original:
        opts += scaled_original(epochs, iters_per_epoch)
    if recipe.pretrained:
        opts += ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", pretrain(args)]
    opts = budget_opts(args, data, seed) + ["SOLVER.MAX_EPOCH", str(epochs)] + opts + ["OUTPUT_DIR", out]
    cli = default_argument_parser().parse_args(["--config-file", os.path.join(ROOT, recipe.config), *opts])
    cfg = setup_cfg(cli)
    if args.dataset:
        ensure_prepared(cfg)
    start = time.perf_counter()
    if recipe.pixels:
        row: Dict[str, Any] = {"seed": seed, **test_set_metrics(
            evaluate_features(cfg, PixelFeatures(), "DeepPatent", out))}
        row["seconds"] = time.perf_counter() - start
        return row
    row = {"seed": seed, **test_set_metrics(train_main(cli))}
    row["seconds"] = time.perf_counter() - start
    if recipe.original:
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(ROOT, recipe.config))
        cfg.merge_from_list(opts[:-2] + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                                         "TEST.AQE.ENABLED", "True", "TEST.AQE.QE_K", "5", "TEST.AQE.ALPHA", "2.0",
                                         "OUTPUT_DIR", out + "-aqe"])
        row["with its AQE"] = test_set_metrics(evaluate(cfg))
    return row


def summarise(rows: Dict[str, List[Dict[str, Any]]]) -> str:
    """The table: one line per recipe (plus the original with its AQE), mean ± half range over seeds."""
    table = []
    for name, res in rows.items():
        seconds = f"{np.mean([r['seconds'] for r in res]):.0f}"
        table.append([name, *seed_cells(res), seconds, RECIPES[name].about])
        if RECIPES[name].original:
            table.append([f"{name} + AQE k5 a2", *seed_cells([r["with its AQE"] for r in res]), "",
                          "the same models, scored with the original's test config"])
    return tabulate(table, headers=["recipe", *[f"val {m}" for m in METRICS], "s / run", "what"],
                    tablefmt="pipe")


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=list(RECIPES),
                        metavar="NAME", help=f"recipes to train (default: {' '.join(DEFAULT_RECIPES)})")
    parser.add_argument("--list", action="store_true", help="print the recipes and exit")
    parser.add_argument("--work", default=os.path.join(ROOT, "logs/bench_recipes"), help="data and runs")
    parser.add_argument("--dataset", default="", help="a DeepPatent-layout root to score instead of the hard "
                                                      "synthetic set (e.g. tools/make_object_patents.py's)")
    parser.add_argument("--patents", type=int, default=600, help="patents in the hard synthetic set")
    parser.add_argument("--size", type=int, default=64, help="training and test size in pixels")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-patents", type=int, default=2000, help="synthetic pretraining set size")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="a minute-long run of the whole pipeline")
    args = parser.parse_args(argv)
    if args.list:
        print(tabulate([[k, r.config, r.about] for k, r in RECIPES.items()], headers=["recipe", "config", "what"]))
        return 0
    if args.tiny:
        args.patents, args.size, args.epochs, args.batch, args.workers, args.seeds = 40, 32, 1, 16, 0, [0]
        args.pretrain_patents, args.pretrain_epochs = 40, 1
    os.makedirs(args.work, exist_ok=True)
    setup_logger(args.work)
    hard = os.path.join(args.work, f"hard-{args.patents}-{args.size}px")
    data = os.path.abspath(args.dataset) if args.dataset else hard
    if not args.dataset and not os.path.isfile(os.path.join(data, "synthetic_info.json")):
        generate(data, SyntheticSpec(num_patents=args.patents, image_size=args.size, seed=11, effects=SHEET_EFFECTS,
                                     holdout_kinds=HOLDOUT_KINDS, val_fraction=0.2, train_fraction=0.6))
    with open(os.path.join(data, "train_data", "train_patent_trn.txt"), encoding="utf-8") as f:
        iters_per_epoch = max(1, sum(1 for line in f if line.strip()) // args.batch)
    runs = os.path.join(args.work, f"runs-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(runs, exist_ok=True)  # the pixel rows train nothing, so no run creates it
    rows: Dict[str, List[Dict[str, Any]]] = {name: [] for name in args.recipes}
    for seed in args.seeds:
        for name in args.recipes:
            rows[name].append(run_recipe(name, args, data, seed, os.path.join(runs, f"{name}-seed{seed}"),
                                         iters_per_epoch))
            print(f"RESULT {name} seed {seed}: {json.dumps(rows[name][-1])}", flush=True)
    text = summarise(rows)
    about = (f"Data set {data}" if args.dataset else f"Hard synthetic set: {args.patents} patents, sheet style, "
             f"{', '.join(HOLDOUT_KINDS)} held out of training")
    print(f"\n{about}; ResNet18-IBN-a from scratch, {args.size} px, {args.epochs} epochs of batch {args.batch} "
          f"({iters_per_epoch} iterations each) unless the recipe says otherwise; seeds {args.seeds}; "
          f"mean ± half range\n")
    print(text)
    with open(os.path.join(runs, "recipes.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "results": rows, "table": text}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
