"""Printing evaluation results as tables."""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Mapping

from tabulate import tabulate

logger = logging.getLogger(__name__)


def metrics_table(results: Mapping[str, float], fmt: str = "pipe") -> str:
    """One-row table of metrics: float columns with 2 decimals, others as they are.

    ``results`` maps metric names to values, or dataset names to such mappings (one row each).
    """
    if results and all(isinstance(v, Mapping) for v in results.values()):
        rows = [(name,) + tuple(m.values()) for name, m in results.items()]
        headers = ["Dataset"] + list(next(iter(results.values())).keys())
    else:
        rows = [tuple(results.values())]
        headers = list(results.keys())
    return tabulate(rows, headers=headers, tablefmt=fmt, floatfmt=".2f", numalign="left")


def print_csv_format(results: Mapping[str, float]) -> None:
    """Log the metrics as a table (the name is kept from fast-reid for ported scripts)."""
    if not results:
        logger.info("No metrics to print (unlabeled set or non-main process)")
        return
    logger.info("Evaluation results in percent:\n%s", metrics_table(OrderedDict(results)))
