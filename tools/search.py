#!/usr/bin/env python
"""Find the nearest indexed drawings (and their patents) for query drawings.

    python tools/search.py --index logs/index \\
        --images datasets/synthetic_patents/test_data/codalab_test_set/lists/test_queries.txt \\
        --topk 10 --output logs/index_results.jsonl [--by-patent] [--no-qe] [--nprobe 64] [--vis logs/index_vis]

The queries are embedded with the index's own model and ranked by the evaluator's pipeline with the
options the index recorded (its query expansion included), so the answers are the evaluator's.
``--by-patent`` lists the best patents instead, each once with its drawings. ``--config-file`` /
``MODEL.WEIGHTS`` or ``--onnx`` select another extractor of the same model (e.g. its ONNX export); a
different model or preprocessing is refused. See docs/search.md.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid.engine import default_argument_parser, setup_cfg  # noqa: E402
from fastreid.evaluation import write_retrieval_visualisation  # noqa: E402
from fastreid.retrieval import Index, build_extractor, collect_images  # noqa: E402
from fastreid.retrieval.patents import group_by_patent, patent_search_depth  # noqa: E402
from fastreid.retrieval.results import OUTPUT_FORMATS, write_drawing_results, write_patent_results  # noqa: E402
from fastreid.retrieval.file_check import readable_items  # noqa: E402
from fastreid.utils.errors import one_line_usage_errors, run_tool  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

logger = logging.getLogger("fastreid.search")


def parser() -> argparse.ArgumentParser:
    p = default_argument_parser("Search an index with query drawings (docs/search.md)")
    p.description = __doc__
    p.add_argument("--index", metavar="INDEX_DIR", help="folder written by tools/build_index.py")
    p.add_argument("--images", metavar="SPEC", help="a query image, a folder or a list file")
    p.add_argument("--topk", type=int, default=10, help="results per query")
    p.add_argument("--no-qe", action="store_true", help="search without the query expansion the index recorded")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (default: the index's)")
    p.add_argument("--onnx", default="", metavar="FILE", help="embed the queries with this ONNX export")
    p.add_argument("--batch-size", type=int, default=1, help="queries embedded and searched together")
    p.add_argument("--output", default="", metavar="FILE", help="results as .jsonl (one object per query) or .csv")
    p.add_argument("--vis", default="", metavar="DIR", help="write a PNG grid per query and DIR/index.html")
    p.add_argument("--show", type=int, default=5, help="queries printed as a table on the console")
    p.add_argument("--by-patent", action="store_true",
                   help="the --topk best patents, each once, ranked by its best drawing, with its drawings")
    return p


def main(args: argparse.Namespace) -> int:
    setup_logger(None)
    if args.output and not args.output.endswith(OUTPUT_FORMATS):
        raise SystemExit(f"--output {args.output}: the file name must end in {' or '.join(OUTPUT_FORMATS)}")
    other_model = bool(args.onnx or args.config_file or args.opts)
    extractor = build_extractor(setup_cfg(args) if not args.onnx else None, args.onnx) if other_model else None
    index = Index.open(args.index, extractor)
    queries = readable_items(collect_images(args.images), hint="Fix or remove these lines.").paths
    depth = patent_search_depth(index.patents, args.topk) if args.by_patent else args.topk
    hits, latency = index.search_in_batches(queries, depth, args.batch_size, qe=False if args.no_qe else None,
                                            nprobe=args.nprobe)
    logger.info("%d queries against %d drawings: latency p50 %.1f ms, p99 %.1f ms per query", len(queries), len(index),
                np.percentile(latency, 50), np.percentile(latency, 99))
    if args.by_patent:
        groups = [group_by_patent(row, args.topk) for row in hits]
        rows = [[os.path.basename(q) if g.rank == 1 else "", g.rank, g.patent or "(unknown)", f"{g.score:.4f}",
                 " ".join(f"#{h.rank}" for h in g.drawings)] for q, row in zip(queries[:args.show], groups) for g in row]
        headers = ["query", "rank", "patent", "best score", "its drawings (drawing ranks)"]
    else:
        rows = [[os.path.basename(q) if h.rank == 1 else "", h.rank, h.patent or "(unknown)", f"{h.score:.4f}",
                 h.path] for q, row in zip(queries[:args.show], hits) for h in row]
        headers = ["query", "rank", "patent", "score", "path"]
    if rows:
        print(tabulate(rows, headers=headers))
    if args.output:
        if args.by_patent:
            write_patent_results(args.output, queries, groups)
        else:
            write_drawing_results(args.output, queries, hits)
        logger.info("Wrote %s", args.output)
    hits = [row[:args.topk] for row in hits]
    if args.vis:
        idx = np.array([[h.item for h in row] for row in hits])
        scores = np.array([[h.score for h in row] for row in hits])
        write_retrieval_visualisation(args.vis, queries, [index.file(i) for i in range(len(index))], idx, scores,
                                      range(len(queries)))
    return 0


if __name__ == "__main__":
    p = one_line_usage_errors(parser())
    ns = p.parse_args()
    if not ns.index or not ns.images:
        p.error("--index and --images are required")
    if ns.topk < 1 or ns.batch_size < 1 or (ns.nprobe is not None and ns.nprobe < 1):
        p.error("--topk, --batch-size and --nprobe must be >= 1")
    sys.exit(run_tool(main, ns))
