"""Rules of a run's output folder and ``result.npy``: where they go, what an earlier run left, whether they
can be written. The preflight reports :func:`check_outputs`; commands remove a stale ``result.npy``."""
from __future__ import annotations

import glob
import logging
import os
import tempfile
from typing import List, Optional, Tuple

from fastreid.config import CfgNode
from fastreid.config.checks import capped_list

logger = logging.getLogger(__name__)


def result_path(cfg: CfgNode) -> str:
    """Where the evaluator writes ``result.npy`` for an unlabeled test set."""
    return cfg.TEST.RESULT_PATH or os.path.join(cfg.OUTPUT_DIR, "result.npy")


def writes_result(cfg: CfgNode) -> bool:
    """Whether evaluating ``cfg`` writes ``result.npy`` (some DATASETS.TESTS set is unlabeled)."""
    from fastreid.utils.registry import DATASET_REGISTRY

    return any(name in DATASET_REGISTRY and not getattr(DATASET_REGISTRY.get(name), "labeled", True)
               for name in cfg.DATASETS.TESTS)


def remove_stale_result(cfg: CfgNode) -> None:
    """Delete an earlier ``result.npy`` before an evaluation that writes a new one, so that an interrupted
    evaluation never leaves an old file looking current."""
    path = result_path(cfg)
    if writes_result(cfg) and os.path.isfile(path):
        os.remove(path)
        logger.info("Removed %s of an earlier evaluation before evaluating", path)


def earlier_run_files(output_dir: str) -> List[str]:
    """Files in ``output_dir`` that belong to a training run or its results (checkpoints, metrics, results)."""
    if not output_dir or not os.path.isdir(output_dir):
        return []
    names = ("last_checkpoint", "metrics.json", "result.npy")
    found = [os.path.join(output_dir, n) for n in names if os.path.exists(os.path.join(output_dir, n))]
    found += glob.glob(os.path.join(glob.escape(output_dir), "*.pth"))
    return sorted(found)


def probe_writable(path_dir: str) -> Optional[str]:
    """None when a file can be created in ``path_dir`` (or, if it does not exist yet, in the nearest existing
    folder above it, where it would be created); else the reason. Leaves nothing behind."""
    target = os.path.abspath(path_dir or ".")
    probe_dir = target
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if not os.path.isdir(probe_dir):
        return f"{probe_dir} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".preflight-", dir=probe_dir)
        os.close(fd)
        os.remove(name)
    except OSError as e:
        return f"cannot create files in {probe_dir}: {e.strerror or e}"
    return None


def check_outputs(cfg: CfgNode, train: bool, evaluate: bool,
                  resume: bool) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(problems, (what, path) of every output) of a run's output folder and ``result.npy``: each must be a
    writable folder / file path, and a new training run needs a folder without an earlier run."""
    errors: List[str] = []
    outputs = [("OUTPUT_DIR", cfg.OUTPUT_DIR)]
    out = cfg.OUTPUT_DIR
    if os.path.exists(out) and not os.path.isdir(out):
        errors.append(f"OUTPUT_DIR {out} exists and is not a folder")
    else:
        reason = probe_writable(out)
        if reason:
            errors.append(f"OUTPUT_DIR {out} is not writable: {reason}")
    if train and not resume:
        earlier = earlier_run_files(out)
        if earlier:
            errors.append(
                f"OUTPUT_DIR {out} holds an earlier run ({len(earlier)} files):\n{capped_list(earlier)}\n"
                f"    A new run would mix its checkpoints, metrics and results with these. Continue that run with "
                f"--resume, or choose another OUTPUT_DIR (or move the folder away).")
    if evaluate and writes_result(cfg):
        path = result_path(cfg)
        outputs.append(("result.npy (TEST.RESULT_PATH)", path))
        if os.path.isdir(path):
            errors.append(f"TEST.RESULT_PATH {path} is a folder; give the file name (e.g. {path}/result.npy)")
        else:
            reason = probe_writable(os.path.dirname(os.path.abspath(path)))
            if reason:
                errors.append(f"TEST.RESULT_PATH {path} is not writable: {reason}")
    return errors, outputs
