"""What the training benchmarks share: the metrics they report and their cells over seeds."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

METRICS = ("mAP", "mAP@10", "Rank-1")


def test_set_metrics(results: Dict[str, Any]) -> Dict[str, float]:
    """The ``METRICS`` of the (single) test set, whether a run returned them flat or per data set."""
    flat = results if "mAP" in results else next(iter(results.values()))
    return {m: float(flat[m]) for m in METRICS}


def seed_cells(runs: List[Dict[str, float]]) -> List[str]:
    """One "mean ± half the range" cell per metric over the runs of the seeds."""
    return [f"{np.mean([r[m] for r in runs]):.2f} ± {np.ptp([r[m] for r in runs]) / 2:.2f}" for m in METRICS]
