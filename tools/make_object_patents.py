#!/usr/bin/env python
"""Render real 3D product models as design-patent sheets in the DeepPatent layout.

The models come from Debian's sweethome3d-furniture package (CC-0 and CC-BY; credits are written to
objects_info.json, see docs/object_patents.md):
    apt-get install sweethome3d-furniture
    pip install trimesh
    python tools/make_object_patents.py --output datasets/object_patents
Then train with DATASETS.ROOT datasets/object_patents (DATASETS.NAMES ("DeepPatent",)).

A smaller, faster set (the benchmark of docs/recipes.md) and an example figure:
    python tools/make_object_patents.py --output datasets/object_patents_512 --image-size 512
    python tools/make_object_patents.py --examples docs/images/object_patents.png
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from PIL import Image  # noqa: E402

from fastreid.data.synthetic.catalog import DEFAULT_CATALOG_DIR, read_catalogs  # noqa: E402
from fastreid.data.synthetic.object_patents import ObjectPatentSpec, generate_objects, render_object_patent  # noqa: E402
from fastreid.utils.file_io import atomic_open  # noqa: E402

EXAMPLE_MODELS = ("Armchair", "Desk lamp", "Coffee maker", "Scooter", "Stapler")


def write_examples(path: str, spec: ObjectPatentSpec, names=EXAMPLE_MODELS, cell: int = 256) -> None:
    """A grid: one row per named model, its perspective, front, left and top sheets."""
    models = read_catalogs(spec.catalogs)
    chosen = [next((m for m in models if m.name == n), None) for n in names]
    chosen = [m for m in chosen if m is not None] or models[:4]
    views = ["perspective", "front", "left", "top"]
    grid = Image.new("L", (len(views) * (cell + 4), len(chosen) * (cell + 4)), 160)
    for r, model in enumerate(chosen):
        for c, img in enumerate(render_object_patent(model, views, spec, r)):
            grid.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.LANCZOS),
                       (c * (cell + 4), r * (cell + 4)))
    with atomic_open(path, "wb") as f:
        grid.save(f, format="PNG")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", help="folder to write (train_data/, test_data/, objects_info.json inside)")
    parser.add_argument("--catalogs", nargs="+", default=[DEFAULT_CATALOG_DIR],
                        help=".sh3f catalogue files or folders of them")
    parser.add_argument("--image-size", type=int, default=1024, help="side of the square sheets in pixels")
    parser.add_argument("--seed", type=int, default=0, help="everything generated is a function of this seed")
    parser.add_argument("--min-views", type=int, default=3, help="fewest sheets per patent (2..7, perspective "
                                                                 "always included)")
    parser.add_argument("--max-views", type=int, default=7, help="most sheets per patent (2..7)")
    parser.add_argument("--train-fraction", type=float, default=0.6, help="share of objects for training")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share for validation (the rest: test)")
    parser.add_argument("--crease-deg", type=float, default=35.0,
                        help="facets meeting at more than this angle are drawn with a line between them")
    parser.add_argument("--max-faces", type=int, default=300_000, help="skip models with more triangles")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N usable models (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="drawing processes (0: one per CPU core)")
    parser.add_argument("--examples", metavar="PNG", help="write an example figure instead of a data set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = ObjectPatentSpec(catalogs=tuple(args.catalogs), image_size=args.image_size, seed=args.seed,
                      min_views=args.min_views, max_views=args.max_views, train_fraction=args.train_fraction,
                      val_fraction=args.val_fraction, crease_deg=args.crease_deg, max_faces=args.max_faces,
                      limit=args.limit)
    try:
        spec.check()
        if args.examples:
            write_examples(args.examples, spec)
            print(f"Wrote {args.examples}")
            return 0
        if not args.output:
            parser.error("--output is required (or --examples)")
        start = time.time()
        counts = generate_objects(args.output, spec, workers=args.workers)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {args.output} in {time.time() - start:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
