#!/usr/bin/env python
"""Write a synthetic design-patent data set in the DeepPatent layout.

Example (the demo data set):
    python tools/make_synthetic_patents.py --output datasets/synthetic_patents --num-patents 1000 \
        --image-size 128 --seed 0
Then train with DATASETS.ROOT datasets/synthetic_patents (DATASETS.NAMES ("DeepPatent",)).

The harder set, drawn like scanned patent sheets (see docs/synthetic_data.md), and a set whose
families use other base shapes (held-out shape families):
    python tools/make_synthetic_patents.py --output datasets/synthetic_sheets --style sheet
    python tools/make_synthetic_patents.py --output datasets/synthetic_heldout --style sheet --seed 1 \
        --base-kinds cylinder hexagon
An example image of every sheet effect (the figure of docs/synthetic_data.md):
    python tools/make_synthetic_patents.py --examples docs/images/synthetic_effects.png
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from PIL import Image, ImageDraw  # noqa: E402

from fastreid.data.synthetic.drawing_sheet import SHEET_EFFECTS  # noqa: E402
from fastreid.data.synthetic.shapes import BASE_KINDS  # noqa: E402
from fastreid.data.synthetic import SyntheticSpec, generate, plan_patents, render_patent  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors, run_tool  # noqa: E402
from fastreid.utils.file_io import atomic_open  # noqa: E402


def write_examples(path: str, seed: int, size: int, patent: int = 0, views: int = 4) -> None:
    """A grid: one patent drawn clean, with each sheet effect alone (forced on every sheet), and with all
    of them at their usual rates (one row each)."""
    patents, families = plan_patents(SyntheticSpec(num_patents=max(patent + 1, 3), image_size=size, seed=seed))
    p = patents[patent]
    rows = [("clean", ())] + [(e, (e,)) for e in SHEET_EFFECTS] + [("all (--style sheet)", SHEET_EFFECTS)]
    label_w, pad = 150, 4
    views_drawn = p.views[:views]
    grid = Image.new("L", (label_w + len(views_drawn) * (size + pad), len(rows) * (size + pad)), 255)
    draw = ImageDraw.Draw(grid)
    for r, (name, effects) in enumerate(rows):
        y = r * (size + pad)
        draw.text((6, y + size // 2 - 6), name, fill=0)
        forced = len(effects) == 1
        for c, img in enumerate(render_patent(seed, size, families[p.family], views_drawn, p.index, effects,
                                              always=forced)):
            grid.paste(Image.fromarray(img), (label_w + c * (size + pad), y))
            draw.rectangle([label_w + c * (size + pad) - 1, y - 1, label_w + c * (size + pad) + size, y + size],
                           outline=160)
    with atomic_open(path, "wb") as f:
        grid.save(f, format="PNG")


def main(argv=None) -> int:
    parser = one_line_usage_errors(
        argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--output", help="folder to write (train_data/, test_data/ inside)")
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
    parser.add_argument("--style", choices=("clean", "sheet"), default="clean",
                        help="clean line drawings (the demo set) or scanned-sheet drawings (every effect)")
    parser.add_argument("--effects", nargs="+", choices=SHEET_EFFECTS, metavar="EFFECT",
                        help=f"sheet effects to apply, a subset of {', '.join(SHEET_EFFECTS)} (overrides --style)")
    parser.add_argument("--base-kinds", nargs="+", choices=BASE_KINDS, metavar="KIND",
                        help=f"base shapes of the families, a subset of {', '.join(BASE_KINDS)} (default all)")
    parser.add_argument("--holdout-kinds", nargs="+", choices=BASE_KINDS, metavar="KIND",
                        help="base shapes whose families appear only in validation and test (held-out "
                             "shape families; the training share is then the share of the other shapes)")
    parser.add_argument("--examples", metavar="PNG",
                        help="write an example grid of every sheet effect to PNG instead of a data set")
    args = parser.parse_args(argv)
    if args.examples:
        write_examples(args.examples, args.seed, args.image_size)
        print(f"Wrote {args.examples}")
        return 0
    if not args.output:
        parser.error("--output is required (or --examples PNG)")
    effects = tuple(args.effects) if args.effects else (SHEET_EFFECTS if args.style == "sheet" else ())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = SyntheticSpec(num_patents=args.num_patents, image_size=args.image_size, seed=args.seed,
                         min_views=args.min_views, max_views=args.max_views, family_size=tuple(args.family_size),
                         train_fraction=args.train_fraction, val_fraction=args.val_fraction,
                         effects=effects, base_kinds=tuple(args.base_kinds or ()),
                         holdout_kinds=tuple(args.holdout_kinds or ()))
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
    sys.exit(run_tool(main))
