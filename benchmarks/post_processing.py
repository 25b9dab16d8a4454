"""The table of post-processing chosen on validation (docs/evaluation.md, "on real objects").

Input: folders written by ``tools/test.py`` with ``DATASETS.TESTS '("DeepPatent", "DeepPatentTest")'``,
one with ``TEST.AQE.AUTO`` (and ``AUTO_DBA_K`` / ``AUTO_RERANK``) and one without post-processing. For
each model it prints every candidate of ``qe_choice.json`` (validation mAP@10, mean gain, its lower
bound) with the test mAP@10 that candidate gives (the test split's features extracted once, then the
pipeline's ``post_process`` and ``rank``), and the two ``result.npy`` scored against the ground truth.

    python benchmarks/post_processing.py --root datasets/object_patents_512 \\
        --run bagtricks=logs/post_choice_objects/bagtricks-seed0-auto,logs/post_choice_objects/bagtricks-seed0-plain
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Dict, List, Tuple

import numpy as np
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.config import get_cfg  # noqa: E402
from fastreid.data import build_reid_test_loader  # noqa: E402
from fastreid.data.synthetic import load_test_ground_truth  # noqa: E402
from fastreid.engine.commands import build_eval_model  # noqa: E402
from fastreid.evaluation import ReidEvaluator, inference_on_dataset, score_submission  # noqa: E402
from fastreid.evaluation.pipeline import RetrievalOptions, post_process, rank  # noqa: E402


def candidate_test_scores(auto_dir: str, q_labels: np.ndarray, db_labels: np.ndarray) -> Dict[str, float]:
    """Test mAP@10 of every candidate recorded in ``auto_dir/qe_choice.json``, by its ``steps`` name."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(auto_dir, "config_eval.yaml"))
    cfg.TEST.AQE.AUTO = False
    loader, nq = build_reid_test_loader(cfg, "DeepPatentTest")
    with tempfile.TemporaryDirectory() as scratch:  # its result.npy (no post-processing) is not kept
        cfg.TEST.RESULT_PATH = os.path.join(scratch, "result.npy")
        collect = ReidEvaluator(cfg, nq, scratch, labeled=False)
        inference_on_dataset(build_eval_model(cfg), loader, collect)
    feats = collect._gather()[0].float()
    base = RetrievalOptions.from_config(cfg)
    with open(os.path.join(auto_dir, "qe_choice.json"), encoding="utf-8") as f:
        rows = json.load(f)["candidates"]
    scores = {}
    for r in rows:
        options = base.replace(qe_k=r["qe_k"], qe_alpha=r["alpha"], dba=r["dba_k"] > 0, dba_k=max(r["dba_k"], 1),
                               rerank=r["rerank"])
        query, gallery = post_process(feats[:nq], feats[nq:], options)
        scores[r["steps"]] = score_submission(rank(query, gallery, 10, options)[1], q_labels, db_labels)["mAP@10"]
    return scores


def model_table(name: str, auto_dir: str, plain_dir: str, root: str) -> Tuple[List[List[str]], List[str]]:
    """(candidate rows, summary row) of one model."""
    q_labels, db_labels = load_test_ground_truth(root)
    with open(os.path.join(auto_dir, "qe_choice.json"), encoding="utf-8") as f:
        choice = json.load(f)
    test = candidate_test_scores(auto_dir, q_labels, db_labels)
    chosen = choice["candidates"][choice["chosen"]]
    rows = [[name, r["steps"] + (" (chosen)" if r is chosen else ""), f"{r['mAP@10']:.2f}",
             f"{r['gain']:+.2f}", f"{r['gain_low']:+.2f}", f"{test[r['steps']]:.2f}"] for r in choice["candidates"]]
    runs = {d: score_submission(np.load(os.path.join(d, "result.npy")), q_labels, db_labels)
            for d in (plain_dir, auto_dir)}
    summary = [name, chosen["steps"], f"{runs[plain_dir]['mAP@10']:.2f} -> {runs[auto_dir]['mAP@10']:.2f}",
               f"{runs[plain_dir]['Recall@1']:.2f} -> {runs[auto_dir]['Recall@1']:.2f}"]
    return rows, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the dataset root (its test split's ground truth is read)")
    p.add_argument("--run", action="append", required=True, metavar="NAME=AUTO_DIR,PLAIN_DIR",
                   help="a model's two tools/test.py output folders (repeatable)")
    args = p.parse_args()
    rows, summaries = [], []
    for spec in args.run:
        name, _, dirs = spec.partition("=")
        auto_dir, _, plain_dir = dirs.partition(",")
        if not (name and auto_dir and plain_dir):
            p.error(f"--run {spec}: expected NAME=AUTO_DIR,PLAIN_DIR")
        model_rows, summary = model_table(name, auto_dir, plain_dir, args.root)
        rows += model_rows
        summaries.append(summary)
    print(tabulate(rows, headers=["model", "candidate", "val mAP@10", "gain", "gain lower bound", "test mAP@10"],
                   tablefmt="github"))
    print()
    print(tabulate(summaries, headers=["model", "chosen", "test mAP@10 none -> chosen", "test Recall@1"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
