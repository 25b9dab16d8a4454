#!/usr/bin/env python
"""Write a synthetic design-patent data set in the DeepPatent layout.

Example (the demo data set):
    python tools/make_synthetic_patents.py --output datasets/synthetic_patents --num-patents 1000 \
        --image-size 128 --seed 0
Then train with DATASETS.ROOT datasets/synthetic_patents (DATASETS.NAMES ("DeepPatent",)).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid.data.synthetic import SyntheticSpec, generate  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder to write (train_data/, test_data/ inside)")
    parser.add_argument("--num-patents", type=int, default=1000, help="number of patents (objects)")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square drawings in pixels")
    parser.add_argument("--seed", type=int, default=0, help="everything generated is a function of this seed")
    parser.add_argument("--min-views", type=int, default=3, help="fewest drawings per patent (1..7)")
    parser.add_argument("--max-views", type=int, default=7, help="most drawings per patent (1..7)")
    parser.add_argument("--family-size", type=int, nargs=2, default=(2, 4), metavar=("LOW", "HIGH"),
                        help="patents per family of similar objects")
    parser.add_argument("--train-fraction", type=float, default=0.6, help="share of patents for training")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share for validation (the rest: test)")
    parser.add_argument("--workers", type=int, default=0, help="drawing processes (0: one per CPU core)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = SyntheticSpec(num_patents=args.num_patents, image_size=args.image_size, seed=args.seed,
                         min_views=args.min_views, max_views=args.max_views, family_size=tuple(args.family_size),
                         train_fraction=args.train_fraction, val_fraction=args.val_fraction)
    start = time.perf_counter()
    try:
        counts = generate(args.output, spec, workers=args.workers)
    except ValueError as e:
        parser.error(str(e))
    n_images = sum(v for k, v in counts.items() if k.endswith("_images"))
    print(f"Wrote {n_images} images of {counts['patents']} patents to {args.output} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
