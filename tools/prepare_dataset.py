#!/usr/bin/env python
"""Write resized copies of a data set once, for loaders that would otherwise decode large drawings.

    python tools/prepare_dataset.py --config-file configs/patent/sbs_R101-ibn_patent_256.yml --size 256 --size 384
    python tools/prepare_dataset.py --root datasets/synthetic_patents --size 64 --size 96 --workers 8

Every image listed by the datasets of DATASETS.NAMES and DATASETS.TESTS is read as the loaders read
it (INPUT.GRAYSCALE), resized to each size with the loaders' resize (INPUT.RESIZE_MODE: bicubic, or
area / ink, which keep thin lines) and written as PNG to <root>/prepared/<H>x<W>/ (<H>x<W>_<mode>/ for
other modes) under its relative path; list files are copied. Loaders whose image size and resize mode
match a copy read it (DATASETS.PREPARED, see docs/training.md). A size is N (square) or HxW.

    python tools/prepare_dataset.py --root datasets/object_patents --size 128 INPUT.RESIZE_MODE ink
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid.data.prepare import prepare_dataset  # noqa: E402
from fastreid.engine.defaults import setup_cfg  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors, run_tool  # noqa: E402


def parse_size(text: str) -> Tuple[int, int]:
    """"256" -> (256, 256); "384x128" -> (384, 128)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with integers, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive integers, got {text!r}")
    return (values[0], values[-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = one_line_usage_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--config-file", default="", help="config whose DATASETS and INPUT.GRAYSCALE are used")
    parser.add_argument("--root", default="", help="datasets root (default: the config's DATASETS.ROOT)")
    parser.add_argument("--size", type=parse_size, action="append", required=True,
                        help="N or HxW; repeat for several copies")
    parser.add_argument("--workers", type=int, default=0, help="resizing processes (0: one per CPU core)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = setup_cfg(args)
    if args.root:
        cfg.defrost()
        cfg.DATASETS.ROOT = args.root
        cfg.freeze()
    start = time.perf_counter()
    folders = prepare_dataset(cfg, args.size, workers=args.workers)
    print(f"Wrote {', '.join(folders)} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
