#!/usr/bin/env python
"""The CPU demo (``make demo``): synthetic data, two-stage training, evaluation against raw pixels.

1. Generates the synthetic patent set into ``datasets/synthetic_patents`` if it is missing.
2. Trains ``configs/demo/demo_2stage.yml`` (ResNet18-IBN-a, 64 px then 96 px); a finished stage is
   skipped and an interrupted one resumes, so running the demo again only re-evaluates.
3. Evaluates the best model on the synthetic validation split next to a raw-pixel baseline (the
   test-size grey image, flattened, cosine similarity), writes ``result.npy`` for the synthetic
   challenge-style test set, scores it against the ground truth, and writes a retrieval visualisation.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid.config import CfgNode  # noqa: E402
from fastreid.data.synthetic import SyntheticSpec, generate, load_test_ground_truth  # noqa: E402
from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import build_eval_model, train_main  # noqa: E402
from fastreid.engine.stages import plan_stages, previous_stage_weights, stage_config  # noqa: E402
from fastreid.evaluation import score_submission  # noqa: E402
from fastreid.evaluation.baselines import PixelFeatures, evaluate_features  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

logger = logging.getLogger("fastreid.demo")

METRICS = ("mAP", "mAP@10", "Rank-1", "Rank-5", "Rank-10", "mINP")


def qe_cells(cfg: CfgNode, metrics: Dict[str, float]) -> List[Any]:
    """Validation mAP@10 without expansion and the expansion used: ``TEST.AQE.AUTO`` reports both; a
    fixed ``TEST.AQE`` has no number without expansion (empty cell)."""
    if "QE_K" in metrics:
        k = int(metrics["QE_K"])
        return [metrics["noQE-mAP@10"], f"{k}, {metrics['QE_ALPHA']:g}" if k else "none"]
    if cfg.TEST.AQE.ENABLED:
        return ["", f"{cfg.TEST.AQE.QE_K}, {cfg.TEST.AQE.ALPHA:g} (fixed)"]
    return [metrics["mAP@10"], "none"]


def final_cfg(base: CfgNode, output_dir: str, vis: bool) -> CfgNode:
    cfg = base.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = output_dir
    cfg.TEST.RESULT_PATH = os.path.join(output_dir, "result.npy")
    cfg.TEST.VIS.ENABLED = vis
    cfg.freeze()
    return cfg


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/demo/demo_2stage.yml"))
    parser.add_argument("--data", default=os.path.join(ROOT, "datasets/synthetic_patents"),
                        help="synthetic data set folder (generated when missing)")
    parser.add_argument("--output", default=os.path.join(ROOT, "logs/demo"), help="output folder of the demo")
    parser.add_argument("--fresh", action="store_true",
                        help="train again: an earlier demo output folder is moved aside to <output>.previous-<time>")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE) for every stage")
    args = parser.parse_args(argv)
    moved = ""
    # --resume continues an earlier demo (finished stages are skipped); a first run has nothing to resume.
    resume = not args.fresh and os.path.isdir(args.output)
    if args.fresh and os.path.isdir(args.output):
        # Training refuses a folder holding an earlier run; the demo keeps it under another name.
        moved = f"{args.output.rstrip(os.sep)}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(args.output, moved)
    setup_logger(args.output)
    if moved:
        logger.info(f"--fresh: the earlier demo output was moved to {moved}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    timings: "OrderedDict[str, float]" = OrderedDict()

    start = time.perf_counter()
    if not os.path.isfile(os.path.join(args.data, "synthetic_info.json")):
        logger.info(f"Generating the synthetic patent drawings into {args.data}")
        generate(args.data, SyntheticSpec())
    timings["data"] = time.perf_counter() - start

    opts = ["DATASETS.ROOT", args.data, "OUTPUT_DIR", args.output] + list(args.opts or [])
    train_args = default_argument_parser().parse_args(
        ["--config-file", args.config_file, *(["--resume"] if resume else []), *opts])
    start = time.perf_counter()
    train_main(train_args)
    timings["training"] = time.perf_counter() - start

    stages = plan_stages(args.config_file, opts)
    last_cfg = stage_config(stages[-1], opts, stages[-2] if len(stages) > 1 else None)
    cfg = last_cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = previous_stage_weights(stages[-1].output_dir)
    cfg.freeze()
    start = time.perf_counter()
    model = build_eval_model(cfg)
    trained_dir = os.path.join(args.output, "final")
    # The visualisation shows the worst validation queries, where right and wrong answers are known.
    trained = evaluate_features(final_cfg(cfg, trained_dir, vis=True), model, "DeepPatent", trained_dir)
    evaluate_features(final_cfg(cfg, trained_dir, vis=False), model, "DeepPatentTest", trained_dir)
    timings["evaluation"] = time.perf_counter() - start

    start = time.perf_counter()
    pixel_dir = os.path.join(args.output, "pixel_baseline")
    pixel_cfg = final_cfg(cfg, pixel_dir, vis=False)
    pixel = evaluate_features(pixel_cfg, PixelFeatures(), "DeepPatent", pixel_dir)
    evaluate_features(pixel_cfg, PixelFeatures(), "DeepPatentTest", pixel_dir)
    timings["pixel baseline"] = time.perf_counter() - start

    q_labels, db_labels = load_test_ground_truth(args.data)
    scores = {name: score_submission(np.load(os.path.join(d, "result.npy")), q_labels, db_labels)
              for name, d in (("trained", trained_dir), ("pixels", pixel_dir))}
    size = "x".join(str(s) for s in cfg.INPUT.SIZE_TEST)
    rows = [[f"raw pixels ({size}, cosine)"] + [pixel[m] for m in METRICS] + qe_cells(cfg, pixel)
            + [scores["pixels"]["mAP@10"], scores["pixels"]["Recall@1"]],
            [f"ResNet18-IBN demo ({size})"] + [trained[m] for m in METRICS] + qe_cells(cfg, trained)
            + [scores["trained"]["mAP@10"], scores["trained"]["Recall@1"]]]
    headers = (["method"] + [f"val {m}" for m in METRICS] + ["val mAP@10 no QE", "QE (k, alpha)"]
               + ["test mAP@10", "test Recall@1"])
    table = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f")
    timing_line = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    summary = {"validation": {"trained": trained, "pixels": pixel}, "test_result_npy": scores,
               "timings_s": timings, "weights": cfg.MODEL.WEIGHTS}
    with open(os.path.join(args.output, "demo_results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print("\nSynthetic patents: validation split (metrics in percent) and result.npy on the test split\n")
    print(table)
    print(f"\nTimes: {timing_line}")
    print(f"result.npy: {os.path.join(trained_dir, 'result.npy')}  (pixel baseline: {pixel_dir}/result.npy)")
    print(f"retrieval visualisation: {os.path.join(trained_dir, 'vis')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
