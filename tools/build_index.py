#!/usr/bin/env python
"""Build (or extend) a search index of drawings: features in shards, a faiss index, a manifest.

    python tools/build_index.py --config-file configs/demo/demo_R18-ibn_96.yml \\
        MODEL.WEIGHTS logs/demo/stage2_demo_R18-ibn_96/model_best.pth \\
        --images datasets/synthetic_patents/test_data/codalab_test_set/lists/test_database.txt --output logs/index
    python tools/build_index.py --output logs/index --add --images new_drawings/
    torchrun --nproc_per_node 4 tools/build_index.py ...    (each process extracts its own shards)

Run the same command again after an interruption: finished shards are kept. See docs/search.md.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid.data import ImageReadError, load_dataset  # noqa: E402
from fastreid.engine import default_argument_parser, launch, setup_cfg  # noqa: E402
from fastreid.evaluation.qe_tuning import QEChoice, recorded_choice  # noqa: E402
from fastreid.evaluation.reid_evaluation import FEAT_DTYPES  # noqa: E402
from fastreid.evaluation.search import auto_structure  # noqa: E402
from fastreid.retrieval import (INDEX_TYPES, BuildOptions, Index, build_extractor,  # noqa: E402
                                collect_images, dataset_items)
from fastreid.retrieval.file_check import readable_items  # noqa: E402
from fastreid.retrieval.items import Items  # noqa: E402
from fastreid.retrieval.unfinished import discard_unfinished  # noqa: E402
from fastreid.utils import comm  # noqa: E402
from fastreid.utils.errors import message_of, one_line_usage_errors, run_tool  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402
from fastreid.utils.dist_checks import check_same_input, check_shared_folder  # noqa: E402

logger = logging.getLogger("fastreid.build_index")


def parser() -> argparse.ArgumentParser:
    p = default_argument_parser("Build a search index of drawings (docs/search.md)")
    p.description = __doc__
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="SPEC", help="an image, a folder (sorted walk) or a list file")
    src.add_argument("--dataset", metavar="NAME:SPLIT", help="a registered dataset split, e.g. DeepPatent:gallery")
    p.add_argument("--output", metavar="INDEX_DIR", help="index folder")
    p.add_argument("--add", action="store_true", help="add the drawings to the existing index in --output")
    p.add_argument("--onnx", default="", metavar="FILE", help="extract with this ONNX export (onnxruntime, CPU)")
    p.add_argument("--skip-duplicates", action="store_true", help="skip drawings listed twice or already indexed")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="skip (and name) listed drawings that are missing or unreadable instead of stopping")
    p.add_argument("--restart", action="store_true",
                   help="discard the unfinished build in --output (its finished shards) and start again")
    p.add_argument("--index-type", type=str.lower, default=None, choices=INDEX_TYPES + ("auto",),
                   help="faiss structure (default TEST.SEARCH.INDEX: flat, exact); auto: chosen by collection size "
                        "(docs/search.md)")
    p.add_argument("--nlist", type=int, default=None,
                   help="IVF lists (default TEST.SEARCH.NLIST; with --index-type auto, by size)")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (default TEST.SEARCH.NPROBE)")
    p.add_argument("--pq-m", type=int, default=None, help="IVF-PQ sub-quantisers (default TEST.SEARCH.PQ_M: dim/8)")
    p.add_argument("--train-size", type=int, default=0, help="IVF training sample (default max(100000, 39*nlist))")
    p.add_argument("--dtype", choices=tuple(FEAT_DTYPES), default=None, help="stored features (TEST.FEAT_DTYPE)")
    p.add_argument("--dba", action="store_true", help="database-side augmentation (or TEST.DBA.ENABLED)")
    p.add_argument("--qe", nargs=2, type=float, default=None, metavar=("K", "ALPHA"),
                   help="record this query expansion (K 0: none) instead of TEST.AQE's or TEST.AQE.AUTO's choice")
    p.add_argument("--shard-size", type=int, default=10000, help="drawings per feature shard")
    return p


def items_of(args: argparse.Namespace, cfg) -> Items:
    """The drawings to index, every one checked before the first shard (all problems at once), the same on
    every process (their paths are recorded in the index)."""
    items = readable_items(_listed(args, cfg), args.skip_unreadable,
                           hint="Fix or remove these lines and run the same command again, or pass --skip-unreadable "
                                "to index the others.")
    check_same_input("The drawings to index (--images / --dataset)",
                     (f"{p}\t{patent}" for p, patent in zip(items.paths, items.patents)), len(items), "drawings",
                     "Every machine must list the same drawings at the same paths (a shared file system).")
    return items


def _listed(args: argparse.Namespace, cfg) -> Items:
    if args.images:
        return collect_images(args.images)
    name, _, split = args.dataset.partition(":")
    split = split or "gallery"
    if split not in ("train", "query", "gallery"):
        raise SystemExit(f"--dataset {args.dataset}: the split must be train, query or gallery")
    ds = load_dataset(cfg, name)
    return dataset_items(getattr(ds, split), getattr(ds, "origins", {}))


def main(args: argparse.Namespace) -> None:
    setup_logger(None, distributed_rank=comm.get_rank())
    check_shared_folder(args.output, "--output", "Every process writes its shards there and rank 0 reads them all. ")
    if args.restart and comm.is_main_process():
        discard_unfinished(args.output)
    comm.synchronize()
    if args.add:
        index = Index.open(args.output)
        added = index.add(items_of(args, index.extractor.cfg), args.skip_duplicates)
        if comm.is_main_process():
            logger.info("Added %d drawings: %s now holds %d", added, args.output, len(index))
        return
    cfg = None if args.onnx else setup_cfg(args)
    extractor = build_extractor(cfg, args.onnx)
    cfg = extractor.cfg
    overrides = {"shard_size": args.shard_size, "train_size": args.train_size}
    if args.dtype:
        overrides["dtype"] = args.dtype
    options = BuildOptions.from_config(cfg, QEChoice.none() if args.qe else recorded_choice(cfg), **overrides)
    items = items_of(args, cfg)
    changes = {"index": args.index_type, "nlist": args.nlist, "nprobe": args.nprobe, "pq_m": args.pq_m,
               "dba": args.dba or None}
    if args.index_type == "auto":
        changes["index"] = None
    if args.index_type == "auto" and len(items):
        dim = int(extractor([items.paths[0]]).shape[1])  # the model's feature size, from its first drawing
        changes["index"], nlist, nprobe = auto_structure(len(items), dim)
        changes["nlist"], changes["nprobe"] = args.nlist or nlist, args.nprobe or nprobe
        logger.info("--index-type auto: %s (nlist %d, nprobe %d) for %d drawings of %d-d features", changes["index"],
                    changes["nlist"], changes["nprobe"], len(items), dim)
    if args.qe:
        changes.update(qe_k=int(args.qe[0]), qe_alpha=args.qe[1])
    options.retrieval = options.retrieval.replace(**{k: v for k, v in changes.items() if v is not None})
    index = Index.build(args.output, items, extractor, options, args.skip_duplicates)
    if index is not None:
        logger.info("Index ready: %s (%d drawings)", args.output, len(index))


def build_or_explain(args: argparse.Namespace) -> None:
    """:func:`main`; a drawing that fails while extracting says what was kept and how to finish the build."""
    try:
        main(args)
    except ImageReadError as e:
        raise ImageReadError(f"{message_of(e)}. The finished shards are kept in {args.output}: fix the file or "
                             f"remove its line, then run the same command again (shards whose drawings are "
                             f"unchanged are reused)") from None


if __name__ == "__main__":
    p = one_line_usage_errors(parser())
    ns = p.parse_args()
    if not ns.output or not (ns.images or ns.dataset):
        p.error("--output and one of --images / --dataset are required")
    sys.exit(run_tool(launch, build_or_explain, ns.num_gpus, num_machines=ns.num_machines,
                      machine_rank=ns.machine_rank, dist_url=ns.dist_url, args=(ns,)))
