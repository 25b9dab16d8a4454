#!/usr/bin/env python
"""Export the feature extractor (ONNX, dynamic batch) and check it against PyTorch on real drawings.

    python tools/export.py --config-file configs/demo/demo_R18-ibn_96.yml \\
        MODEL.WEIGHTS logs/demo/stage2_demo_R18-ibn_96/model_best.pth --format onnx --output logs/demo/model.onnx \\
        --images datasets/synthetic_patents/test_data/codalab_test_set/queries

Prints the largest feature difference and exits non-zero when the L2-normalised features differ by
more than --tolerance. The file feeds ``tools/build_index.py --onnx`` and ``tools/search.py --onnx``.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.data import load_dataset  # noqa: E402
from fastreid.engine import default_argument_parser, setup_cfg  # noqa: E402
from fastreid.retrieval import TorchExtractor, collect_images  # noqa: E402
from fastreid.retrieval.export import compare_onnx, export_onnx  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors, run_tool  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

logger = logging.getLogger("fastreid.export")


def parser() -> argparse.ArgumentParser:
    p = default_argument_parser("Export the feature extractor (docs/search.md)")
    p.description = __doc__
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    p.add_argument("--output", metavar="FILE", help="the exported model file")
    p.add_argument("--images", default="", metavar="SPEC",
                   help="drawings to check on (default: the queries of DATASETS.TESTS[0])")
    p.add_argument("--num-check", type=int, default=32, help="how many drawings to check on")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted difference of normalised features")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    return p


def main(args: argparse.Namespace) -> int:
    setup_logger(None)
    cfg = setup_cfg(args)
    extractor = TorchExtractor(cfg)
    if args.images:
        paths = collect_images(args.images).paths
    else:
        paths = [it[0] for it in load_dataset(cfg, cfg.DATASETS.TESTS[0]).query]
    paths = paths[:args.num_check]
    export_onnx(extractor, args.output, args.opset)
    diff = compare_onnx(extractor, args.output, paths)
    print(f"ONNX vs PyTorch on {len(paths)} drawings: max abs diff {diff['max_abs_diff']:.3g} (features up to "
          f"{diff['max_abs_feature']:.3g}), normalised {diff['max_abs_diff_normalized']:.3g} "
          f"(tolerance {args.tolerance:g})")
    if not diff["max_abs_diff_normalized"] <= args.tolerance:
        raise SystemExit(f"{args.output}: the ONNX features differ from PyTorch's by "
                         f"{diff['max_abs_diff_normalized']:.3g}, more than --tolerance {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    p = one_line_usage_errors(parser())
    ns = p.parse_args()
    if not ns.output:
        p.error("--output is required")
    sys.exit(run_tool(main, ns))
