#!/usr/bin/env python
"""Train (or with --eval-only evaluate) a model from a config; a config with STAGES runs every stage.

    python tools/train_net.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml
    python tools/train_net.py --config-file configs/patent/sbs_R101-ibn_patent_2stage.yml --num-gpus 4
    python tools/train_net.py --config-file X.yml --eval-only MODEL.WEIGHTS logs/x/model_best.pth
    python tools/train_net.py --config-file X.yml --check   # preflight only (docs/guarantees.md)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.engine import default_argument_parser  # noqa: E402
from fastreid.engine.commands import run_command, train_main  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors  # noqa: E402


def main() -> None:
    args = one_line_usage_errors(default_argument_parser()).parse_args()
    run_command(train_main, args)


if __name__ == "__main__":
    main()
