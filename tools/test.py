#!/usr/bin/env python
"""Evaluate MODEL.WEIGHTS on every DATASETS.TESTS set (on the unlabeled challenge set: write result.npy).

    python tools/test.py --config-file configs/patent/sbs_R101-ibn_patent_test.yml --eval-only \
        MODEL.WEIGHTS logs/patent/sbs_R101-ibn_384/model_best.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import run_command, test_main  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors  # noqa: E402


def main() -> None:
    args = one_line_usage_errors(default_argument_parser("fastreid evaluation (always --eval-only)")).parse_args()
    args.eval_only = True
    run_command(test_main, args)


if __name__ == "__main__":
    main()
