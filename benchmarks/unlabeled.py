#!/usr/bin/env python
"""Does fine-tuning on pseudo-labelled unlabeled drawings help? Base, control and pseudo-label rounds, one table.

    python benchmarks/unlabeled.py --dataset datasets/object_patents_512 --seeds 0 1
    python benchmarks/unlabeled.py --dataset datasets/object_patents_512 --seeds 0 1 \
        --base-runs logs/bench_recipes/runs-<stamp>     # reuse recipes.py's bagtricks+ink-seed<s> models

Per seed: the base model is the recipe benchmark's ``bagtricks+ink`` (the demo recipe with the ink-preserving
resize, ResNet18-IBN-a from scratch, 64 px, its budget) trained or reused; then two arms start from it and run
the same ``--rounds`` rounds of ``--round-epochs`` epochs (``fastreid.engine.unlabeled.run_rounds``):

- control: the rounds on the labeled training set alone (the base trained for the same extra epochs);
- pseudo: each round clusters the validation database (``val_db_patent.txt``, labels never read) with the
  current model and trains on the training set plus the clustered drawings.

Validation is transductive for the pseudo arm: its database drawings are the unlabeled pool (the user's own
collection, as in search); the queries are never used. Scores val without query expansion, mean ± half the
range over seeds, and writes everything as JSON. The pool's true labels only grade the clusters (pairwise
precision and recall), after the fact.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from benchmarks.recipes import DEMO, RECIPES, budget_opts, ensure_prepared, recipe_cfg  # noqa: E402
from benchmarks.seed_table import METRICS, seed_cells, test_set_metrics  # noqa: E402
from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import evaluate, train_main  # noqa: E402
from fastreid.engine.unlabeled import run_rounds  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

BASE_RECIPE = "bagtricks+ink"
POOL = "train_data/val_db_patent.txt"


def cluster_quality(pseudo_list: str, pool_list: str) -> Dict[str, float]:
    """Pairwise precision and recall of the pseudo-identities against the pool's true labels (grading only)."""
    truth = {}
    with open(pool_list, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                path, label = line.split()[:2]
                truth[os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(pool_list)), path))] = label
    with open(pseudo_list, encoding="utf-8") as f:
        pairs = [line.split() for line in f if line.strip()]
    pred = np.array([p[1] for p in pairs])
    true = np.array([truth[os.path.normpath(p[0])] for p in pairs])
    same_pred = pred[:, None] == pred[None]
    same_true = true[:, None] == true[None]
    off = ~np.eye(len(pred), dtype=bool)
    all_true = np.array(list(truth.values()))
    true_pairs = int((all_true[:, None] == all_true[None]).sum() - len(all_true))
    hits = int((same_pred & same_true & off).sum())
    return {"clustered": len(pred), "precision": 100 * hits / max(1, int((same_pred & off).sum())),
            "recall": 100 * hits / max(1, true_pairs)}


def run_seed(args: argparse.Namespace, data: str, seed: int, out: str) -> Dict[str, Any]:
    """Base (trained or reused), control and pseudo arms of one seed; their val metrics."""
    opts = budget_opts(args, data, seed) + list(RECIPES[BASE_RECIPE].opts)
    if args.read_originals:
        opts += ["DATASETS.PREPARED", "never"]
    row: Dict[str, Any] = {"seed": seed}
    reused = os.path.join(args.base_runs, f"{BASE_RECIPE}-seed{seed}", "model_final.pth") if args.base_runs else ""
    start = time.perf_counter()
    if reused and os.path.isfile(reused):
        base = reused
        cfg = recipe_cfg(DEMO, opts + ["MODEL.WEIGHTS", base, "OUTPUT_DIR", os.path.join(out, "base-eval")])
        row["base"] = test_set_metrics(evaluate(cfg))
    else:
        if not args.read_originals:
            ensure_prepared(recipe_cfg(DEMO, opts))
        cli = default_argument_parser().parse_args(["--config-file", os.path.join(ROOT, DEMO), *opts,
                                                    "OUTPUT_DIR", os.path.join(out, "base")])
        row["base"] = test_set_metrics(train_main(cli))
        base = os.path.join(out, "base", "model_final.pth")
    row["base_seconds"] = time.perf_counter() - start
    rounds = ["MODEL.WEIGHTS", base, "UNLABELED.ROUNDS", str(args.rounds), "UNLABELED.EPOCHS", str(args.round_epochs),
              "UNLABELED.POOL_LIST", POOL, "UNLABELED.EPS", str(args.eps), "UNLABELED.MIN_SAMPLES",
              str(args.min_samples)]
    for arm, use_pool in (("pseudo", True), ("control", False)):
        arm_opts = opts + rounds + ["OUTPUT_DIR", os.path.join(out, arm)]
        cli = default_argument_parser().parse_args(["--config-file", os.path.join(ROOT, DEMO), *arm_opts])
        start = time.perf_counter()
        row[arm] = test_set_metrics(run_rounds(recipe_cfg(DEMO, arm_opts), cli, use_pool=use_pool))
        row[f"{arm}_seconds"] = time.perf_counter() - start
    row["clusters"] = [cluster_quality(os.path.join(out, "pseudo", f"round{r}", "pseudo_labels.txt"),
                                       os.path.join(data, POOL)) for r in range(1, args.rounds + 1)]
    print(json.dumps(row), flush=True)
    return row


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a DeepPatent-layout root (tools/make_object_patents.py)")
    parser.add_argument("--base-runs", default="", help=f"a recipes.py runs folder holding {BASE_RECIPE}-seed<s>")
    parser.add_argument("--work", default=os.path.join(ROOT, "logs/bench_unlabeled"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the base model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--read-originals", action="store_true",
                        help="read the data set's own images (DATASETS.PREPARED never), no prepared copy written")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--round-epochs", type=int, default=1)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=2)
    args = parser.parse_args(argv)
    data = os.path.abspath(args.dataset)
    runs = os.path.join(args.work, f"runs-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(runs, exist_ok=True)
    setup_logger(runs)
    rows = [run_seed(args, data, s, os.path.join(runs, f"seed{s}")) for s in args.seeds]
    extra = args.rounds * args.round_epochs
    table = [[f"base ({args.epochs} epochs)", *seed_cells([r["base"] for r in rows])],
             [f"base + {extra} epochs, labeled only", *seed_cells([r["control"] for r in rows])],
             [f"base + {extra} epochs, with pseudo-labelled val database", *seed_cells([r["pseudo"] for r in rows])]]
    text = tabulate(table, headers=["run", *[f"val {m}" for m in METRICS]], tablefmt="pipe")
    print(f"\n{data}; {BASE_RECIPE}, {args.size} px, {args.rounds} rounds x {args.round_epochs} epochs, EPS "
          f"{args.eps}, MIN_SAMPLES {args.min_samples}; seeds {args.seeds}; mean ± half range\n\n{text}")
    with open(os.path.join(runs, "unlabeled.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "results": rows, "table": text}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
