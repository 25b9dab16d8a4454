#!/usr/bin/env python
"""Train (or with --eval-only evaluate) a model from a config; a config with STAGES runs every stage.

    python tools/train_net.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml
    python tools/train_net.py --config-file configs/patent/sbs_R101-ibn_patent_2stage.yml --num-gpus 4
    python tools/train_net.py --config-file X.yml --eval-only MODEL.WEIGHTS logs/x/model_best.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.engine import default_argument_parser, launch  # noqa: E402
from fastreid.engine.commands import check_config, train_main  # noqa: E402


def main() -> None:
    args = default_argument_parser().parse_args()
    check_config(args)
    launch(train_main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
