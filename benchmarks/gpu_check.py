#!/usr/bin/env python
"""The GPU check: CUDA tests, training-throughput table and a DeepPatent-sized evaluation, as files.

    bash benchmarks/gpu_check.sh --output gpu_check_out          # one GPU, about 8 minutes
    bash benchmarks/gpu_check.sh --tiny --output /tmp/gpu_check  # the whole script on CPU, about a minute

Writes to ``--output``: ``env.md`` (GPU, driver, torch), ``cuda_tests.txt`` (``tests/test_cuda.py``),
``train_throughput.md`` (``benchmarks/train_throughput.py`` on R101-IBN-NL, 256x256, batch 128: fp32,
AMP fp16, AMP bf16, + channels_last, + compile, and the real loader on 1024 px PNGs) and ``e2e.md``:

1. ~1,500 distinct synthetic drawings at 1024 px, replicated by hard links into a codalab-layout test
   set of 13,133 queries and 38,834 database entries;
2. a checkpoint of the reference test config's model (random weights, BN statistics computed on the
   drawings, so that features are well scaled);
3. ``tools/test.py`` with the reference test config (TEST.SEARCH.BACKEND auto, test batch and workers
   auto) in fp32, with TEST.AMP_DTYPE auto (fp16 + channels_last on CUDA), and with AMP on a copy made
   by ``tools/prepare_dataset.py``: wall time, extraction time and result.npy agreement with fp32,
   per entry and per source drawing (replicas have equal features, so their order among ties is free).

Each part is written as soon as it is done, so a run cut short still leaves the finished tables;
every command's output is appended to ``logs.txt``. Generated data goes to ``--work`` (default
``OUTPUT/work``), so that ``--output`` holds five files.
``--tiny`` shrinks every size (R18 demo config, 96 px drawings, 60 + 180 entries) to run on a CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

SIZES = {
    False: dict(patents=300, image_size=1024, queries=13133, database=38834, train_cfg="configs/patent/sbs_R101-ibn_patent_256.yml",
                train_opts=["SOLVER.IMS_PER_BATCH", "128", "INPUT.SIZE_TRAIN", "[256, 256]"], iters=20, warmup=5,
                variants=["baseline", "amp", "amp_bf16", "amp_cl", "all"], loader_patents=40, loader_size=1024,
                test_cfg="configs/patent/sbs_R101-ibn_patent_test.yml", test_opts=[], calib_batches=8),
    True: dict(patents=8, image_size=96, queries=60, database=180, train_cfg="configs/demo/demo_R18-ibn_64.yml",
               train_opts=["SOLVER.IMS_PER_BATCH", "16", "INPUT.SIZE_TRAIN", "[32, 32]"], iters=2, warmup=1,
               variants=["baseline", "amp"], loader_patents=6, loader_size=96,
               test_cfg="configs/patent/sbs_R101-ibn_patent_test.yml",
               test_opts=["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.WITH_NL",
                          "False", "INPUT.SIZE_TEST", "[32, 32]", "MODEL.DEVICE", "cpu"], calib_batches=1),
}


def _write(path: str, text: str) -> None:
    from fastreid.utils.file_io import atomic_open

    with atomic_open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    print(f"== wrote {path}", flush=True)


def _run(cmd: List[str], log: str, result: Optional[str] = None) -> Tuple[int, float, str]:
    """Run a command from the repository root; returns (exit code, seconds, output). The output is
    appended to ``log`` and, with ``result``, also written to that file."""
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = f"$ {' '.join(cmd)}\n# exit {r.returncode} after {seconds:.1f} s\n{r.stdout}\n{r.stderr}\n"
    with open(log, "a", encoding="utf-8") as f:
        f.write(text)
    if result:
        _write(result, text)
    print(f"== {cmd[1]}: exit {r.returncode} after {seconds:.1f} s", flush=True)
    return r.returncode, seconds, r.stdout + r.stderr


def environment() -> str:
    lines = [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}", f"- CPU cores: {os.cpu_count()}"]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name()}")
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            lines.append(f"- nvidia-smi: {smi}")
        except (OSError, subprocess.SubprocessError) as e:
            lines.append(f"- nvidia-smi: not available ({e})")
    else:
        lines.append("- GPU: none (CPU run)")
    try:
        import faiss  # noqa: F401

        lines.append(f"- faiss {faiss.__version__}, GPUs seen by faiss: "
                     f"{faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
    except ImportError:
        lines.append("- faiss: not installed")
    return "\n".join(lines)


def replicate_codalab(drawings: List[str], root: str, queries: int, database: int) -> Dict[str, List[int]]:
    """Hard-link ``drawings`` cyclically into ``root/test_data/codalab_test_set``; returns the source
    drawing index of every query and database entry (in list order)."""
    base = os.path.join(root, "test_data", "codalab_test_set")
    sources: Dict[str, List[int]] = {}
    for folder, count, offset, listname in (("queries", queries, 0, "test_queries"),
                                            ("database", database, 7, "test_database")):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        names, src = [], []
        for i in range(count):
            k = (i * 7 + offset) % len(drawings)
            rel = f"{folder}/{i:06d}.png"
            os.link(drawings[k], os.path.join(base, rel))
            names.append(rel)
            src.append(k)
        os.makedirs(os.path.join(base, "lists"), exist_ok=True)
        with open(os.path.join(base, "lists", listname + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        sources[folder] = src
    return sources


def make_checkpoint(test_cfg: str, opts: List[str], drawings: List[str], path: str, batches: int) -> None:
    """Random weights of the test config's model with BN statistics averaged over drawing batches."""
    from fastreid.config import get_cfg
    from fastreid.data import build_transforms, read_image
    from fastreid.engine.hooks import update_bn_stats
    from fastreid.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, test_cfg))
    cfg.merge_from_list(opts + ["MODEL.HEADS.NUM_CLASSES", "100", "MODEL.BACKBONE.PRETRAIN", "False"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    device = next(model.parameters()).device
    transform = build_transforms(cfg, is_train=False)
    per_batch = 32

    def stream():
        for b in range(batches):
            paths = [drawings[(b * per_batch + i) % len(drawings)] for i in range(per_batch)]
            images = torch.stack([transform(read_image(p, cfg.INPUT.GRAYSCALE)) for p in paths]).to(device)
            yield {"images": images, "targets": torch.zeros(per_batch, dtype=torch.long, device=device)}

    update_bn_stats(model, stream(), batches)
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}}, path)


def _extraction_seconds(output: str) -> str:
    m = re.search(r"Extracted features of (\d+) images in ([\d.]+) s \(([\d.]+) images/s", output)
    return f"{m.group(2)} ({m.group(3)} img/s)" if m else "?"


def end_to_end(out: str, work: str, size: dict, tiny: bool) -> None:
    from fastreid.data.synthetic import SyntheticSpec, generate

    log = os.path.join(out, "logs.txt")
    drawings_root, test_root = os.path.join(work, "drawings"), os.path.join(work, "data")
    rows: List[List[str]] = []
    start = time.perf_counter()
    generate(drawings_root, SyntheticSpec(num_patents=size["patents"], image_size=size["image_size"], seed=0))
    drawings = sorted(os.path.join(d, f) for d, _, fs in os.walk(drawings_root) for f in fs if f.endswith(".png"))
    rows.append([f"generate {len(drawings)} drawings at {size['image_size']} px", f"{time.perf_counter() - start:.1f}",
                 "", "", ""])
    start = time.perf_counter()
    sources = replicate_codalab(drawings, test_root, size["queries"], size["database"])
    rows.append([f"hard links: {size['queries']} queries + {size['database']} database",
                 f"{time.perf_counter() - start:.1f}", "", "", ""])
    ckpt = os.path.join(work, "model.pth")
    start = time.perf_counter()
    make_checkpoint(size["test_cfg"], size["test_opts"], drawings, ckpt, size["calib_batches"])
    rows.append(["checkpoint (random weights, BN statistics on the drawings)", f"{time.perf_counter() - start:.1f}",
                 "", "", ""])
    common = size["test_opts"] + ["DATASETS.ROOT", test_root, "MODEL.WEIGHTS", ckpt, "TEST.SEARCH.BACKEND", "auto",
                                  "TEST.IMS_PER_BATCH", "-1", "DATALOADER.NUM_WORKERS", "-1"]
    db_source = np.asarray(sources["database"])
    results: Dict[str, np.ndarray] = {}
    runs = [("fp32", ["TEST.AMP_DTYPE", "", "TEST.CHANNELS_LAST", "False", "DATASETS.PREPARED", "never"]),
            ("amp auto", ["TEST.AMP_DTYPE", "auto", "DATASETS.PREPARED", "never"]),
            ("amp auto, prepared copy", ["TEST.AMP_DTYPE", "auto", "DATASETS.PREPARED", "always"])]
    for name, opts in runs:
        if "prepared" in name:
            test_size = "32" if tiny else "384"
            code, sec, _ = _run([sys.executable, "tools/prepare_dataset.py", "--root", test_root, "--size", test_size,
                                 "DATASETS.TESTS", '("DeepPatentTest",)', "DATASETS.NAMES", '("DeepPatentTest",)'],
                                log)
            rows.append([f"tools/prepare_dataset.py --size {test_size} (once)", f"{sec:.1f}",
                         "" if code == 0 else "failed", "", ""])
        run_dir = os.path.join(work, name.replace(" ", "_").replace(",", ""))
        cmd = [sys.executable, "tools/test.py", "--config-file", size["test_cfg"], *common, *opts, "OUTPUT_DIR", run_dir]
        code, sec, output = _run(cmd, log)
        result_file = os.path.join(run_dir, "result.npy")
        if code != 0 or not os.path.isfile(result_file):
            rows.append([f"tools/test.py, {name}", f"{sec:.1f}", "failed (see log)", "", ""])
            continue
        results[name] = np.load(result_file)
        exact = same_source = ""
        if name != "fp32" and "fp32" in results:
            ref, got = results["fp32"], results[name]
            exact = f"{100 * float((ref == got).mean()):.2f}%"
            same_source = f"{100 * float((db_source[ref] == db_source[got]).mean()):.2f}%"
        rows.append([f"tools/test.py, {name}", f"{sec:.1f}", _extraction_seconds(output), exact, same_source])
        _write(os.path.join(out, "e2e.md"), _e2e_table(rows, size))
    _write(os.path.join(out, "e2e.md"), _e2e_table(rows, size))


def _e2e_table(rows: List[List[str]], size: dict) -> str:
    head = (f"End to end on a DeepPatent-test-sized set ({size['queries']} queries x {size['database']} database, "
            f"{size['test_cfg']}, TEST.SEARCH.BACKEND auto, test batch and workers auto); agreement = result.npy "
            f"entries equal to the fp32 run's, per index and per source drawing.\n\n")
    return head + tabulate(rows, headers=["step", "wall s", "extraction s", "agreement (index)",
                                          "agreement (drawing)"], tablefmt="pipe")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the tables and logs.txt (5 files)")
    parser.add_argument("--work", default="", help="folder for the generated data (default: OUTPUT/work)")
    parser.add_argument("--tiny", action="store_true", help="every size shrunk, to run on a CPU")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "train", "eval"], help="parts to leave out")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output)
    work = os.path.abspath(args.work or os.path.join(out, "work"))
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "logs.txt")
    size = SIZES[args.tiny]
    _write(os.path.join(out, "env.md"), environment())
    if "tests" not in args.skip:
        _run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py"],
             log, os.path.join(out, "cuda_tests.txt"))
    if "train" not in args.skip:
        _run([sys.executable, "benchmarks/train_throughput.py", "--config-file", size["train_cfg"],
              "--iters", str(size["iters"]), "--warmup", str(size["warmup"]), "--variants", *size["variants"],
              "--loader", "--loader-data", os.path.join(work, "loader_data"), "--loader-image-size",
              str(size["loader_size"]), "--loader-patents", str(size["loader_patents"]),
              "--loader-variant", "amp", "--profile", size["variants"][-1], "--output", os.path.join(out, "train_throughput.md"),
              *size["train_opts"]], log)
    if "eval" not in args.skip:
        end_to_end(out, os.path.join(work, "e2e"), size, args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
