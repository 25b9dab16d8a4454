#!/usr/bin/env python
"""Fine-tune a trained model on its training set plus the user's unlabeled drawings, pseudo-labelled by
clustering their features, for UNLABELED.ROUNDS rounds (docs/unlabeled.md).

    python tools/pseudo_label.py --config-file configs/demo/demo_R18-ibn_64.yml \\
        MODEL.WEIGHTS logs/demo/R18-ibn_64/model_final.pth UNLABELED.POOL_LIST train_data/val_db_patent.txt \\
        OUTPUT_DIR logs/demo/R18-ibn_64_unlabeled
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import run_command  # noqa: E402
from fastreid.engine.unlabeled import unlabeled_main  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors  # noqa: E402


def main() -> None:
    parser = one_line_usage_errors(default_argument_parser("fastreid: pseudo-label rounds on unlabeled drawings"))
    args = parser.parse_args()
    if args.eval_only:
        parser.error("--eval-only: evaluate the last round's model with tools/test.py instead")
    run_command(unlabeled_main, args)


if __name__ == "__main__":
    main()
