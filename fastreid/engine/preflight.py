"""Everything a command will use, checked before any model is built: the preflight.

A mistake on the evaluation side (a misspelt test set, a missing validation image, an unwritable
result path) must cost seconds, not a training run. :func:`preflight` builds every dataset the command
reads, stats (never decodes) every listed file, looks up every registry name and enumerated value,
probes the output folders and collects *all* problems into one report; ``PreflightReport.raise_if_failed``
turns them into one :class:`PreflightError`. See docs/guarantees.md.
"""
from __future__ import annotations

import contextlib
import difflib
import glob
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from tabulate import tabulate
from torch import nn

from fastreid.config import CfgNode
from fastreid.config.fastreid_compat import unapplied_values
from fastreid.modeling.eval_model import RANDOM_WEIGHTS

logger = logging.getLogger(__name__)

__all__ = ["PreflightError", "PreflightReport", "DatasetSummary", "preflight", "RANDOM_WEIGHTS", "result_path",
           "writes_result", "earlier_run_files", "remove_stale_result"]

# MODEL.WEIGHTS value that asks, explicitly, to evaluate a randomly initialised model.
# Problems listed one by one in a report; the rest are counted.
MAX_LISTED = 20


class PreflightError(RuntimeError):
    """The checks before a run found problems; the message lists all of them."""


@dataclass
class DatasetSummary:
    """One dataset as the command will read it."""

    name: str
    role: str
    train: int = 0
    ids: int = 0
    query: int = 0
    gallery: int = 0
    labeled: bool = True


@dataclass
class PreflightReport:
    """Problems (errors stop the command, warnings are logged) and what was checked."""

    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    datasets: List[DatasetSummary] = field(default_factory=list)
    outputs: List[Tuple[str, str]] = field(default_factory=list)
    files_checked: int = 0
    # What the checks cannot know (listed by --check before its verdict).
    not_checked: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: "PreflightReport", prefix: str = "") -> None:
        """Add ``other``'s findings, each message prefixed (e.g. with the stage)."""
        self.errors += [prefix + e for e in other.errors]
        self.warnings += [prefix + w for w in other.warnings]
        self.datasets += other.datasets
        self.outputs += [(prefix + k, v) for k, v in other.outputs]
        self.files_checked += other.files_checked

    def error_text(self) -> str:
        return f"Preflight found {len(self.errors)} problem(s); nothing was run:\n" + "\n".join(
            f"  - {e}" for e in self.errors)

    def raise_if_failed(self) -> None:
        if self.errors:
            raise PreflightError(self.error_text())

    def log_warnings(self) -> None:
        for w in self.warnings:
            logger.warning(w)

    def summary(self) -> str:
        """Tables of datasets and output paths, then warnings and errors (``--check``)."""
        rows = [(d.name, d.role, d.train, d.ids, d.query, d.gallery, "yes" if d.labeled else "no")
                for d in self.datasets]
        parts = [tabulate(rows, headers=["dataset", "used for", "train images", "train ids", "query", "gallery",
                                         "labeled"], tablefmt="pipe"),
                 tabulate(self.outputs, headers=["output", "path"], tablefmt="pipe"),
                 f"{self.files_checked} listed image files checked (exist and are files)."]
        parts += [f"WARNING: {w}" for w in self.warnings]
        if self.not_checked:
            parts.append("Not checked (only the run can know):\n" + "\n".join(f"  - {n}" for n in self.not_checked))
        parts.append(self.error_text() if self.errors else "Preflight passed.")
        return "\n\n".join(parts)


def _capped(items: Sequence[str]) -> str:
    shown = "\n".join(f"      {x}" for x in items[:MAX_LISTED])
    more = f"\n      ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return shown + more


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


def _probe_writable(path_dir: str) -> Optional[str]:
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


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Builders called only to validate values log as if they ran for real: keep them quiet."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_choice(report: PreflightReport, key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        report.errors.append(f"{key} is {value!r}{hint}; allowed: {', '.join(repr(a) for a in allowed)}")


def _check_amp_dtype(report: PreflightReport, value: str) -> None:
    """TEST.AMP_DTYPE through the evaluator's own resolution (which knows "auto")."""
    from fastreid.evaluation.evaluator import resolve_amp_dtype

    _try(report, "TEST.AMP_DTYPE", lambda: resolve_amp_dtype(value, torch.device("cpu")))


def _check_names(cfg: CfgNode, report: PreflightReport, train: bool, evaluate: bool) -> List[str]:
    """Registry names and enumerated values; returns the dataset names that exist."""
    import fastreid.data  # noqa: F401  (registers the datasets)
    import fastreid.modeling  # noqa: F401  (registers backbones, heads, meta-architectures)
    from fastreid.evaluation import search
    from fastreid.evaluation.pipeline import QE_MODES
    from fastreid.evaluation.qe_tuning import TUNED_METRICS
    from fastreid.evaluation.reid_evaluation import _FEAT_DTYPES
    from fastreid.modeling.backbones.resnet import RESNET_SPECS
    from fastreid.modeling.layers.classifiers import CLASSIFIER_LAYERS
    from fastreid.modeling.layers.norm import NORM_NAMES
    from fastreid.modeling.layers.pooling import POOLING_LAYERS
    from fastreid.modeling.meta_arch.baseline import LOSS_NAMES
    from fastreid.utils.registry import BACKBONE_REGISTRY, DATASET_REGISTRY, HEAD_REGISTRY, META_ARCH_REGISTRY

    m = cfg.MODEL
    for key, value, registry in (("MODEL.META_ARCHITECTURE", m.META_ARCHITECTURE, META_ARCH_REGISTRY),
                                 ("MODEL.BACKBONE.NAME", m.BACKBONE.NAME, BACKBONE_REGISTRY),
                                 ("MODEL.HEADS.NAME", m.HEADS.NAME, HEAD_REGISTRY)):
        _check_choice(report, key, value, registry.names())
    if m.BACKBONE.NAME == "build_resnet_backbone":
        _check_choice(report, "MODEL.BACKBONE.DEPTH", m.BACKBONE.DEPTH, list(RESNET_SPECS))
    _check_choice(report, "MODEL.BACKBONE.NORM", m.BACKBONE.NORM, NORM_NAMES)
    _check_choice(report, "MODEL.HEADS.NORM", m.HEADS.NORM, NORM_NAMES)
    _check_choice(report, "MODEL.HEADS.POOL_LAYER", m.HEADS.POOL_LAYER, list(POOLING_LAYERS))
    _check_choice(report, "MODEL.HEADS.CLS_LAYER", m.HEADS.CLS_LAYER, list(CLASSIFIER_LAYERS))
    _check_choice(report, "MODEL.HEADS.NECK_FEAT", m.HEADS.NECK_FEAT, ("before", "after"))
    t = cfg.TEST
    if evaluate:
        _check_choice(report, "TEST.METRIC", t.METRIC, search.METRICS)
        _check_choice(report, "TEST.SEARCH.BACKEND", t.SEARCH.BACKEND, search.BACKENDS)
        _check_choice(report, "TEST.SEARCH.INDEX", t.SEARCH.INDEX, search.INDEX_TYPES)
        _check_amp_dtype(report, t.AMP_DTYPE)
        _check_choice(report, "TEST.FEAT_DTYPE", t.FEAT_DTYPE, tuple(_FEAT_DTYPES))
        _check_choice(report, "TEST.AQE.MODE", t.AQE.MODE, QE_MODES)
        if t.AQE.AUTO:
            _check_choice(report, "TEST.AQE.AUTO_CRITERION", t.AQE.AUTO_CRITERION, TUNED_METRICS)
    if train and _uses_baseline_losses(m.META_ARCHITECTURE):
        for name in m.LOSSES.NAME:
            _check_choice(report, "MODEL.LOSSES.NAME entry", name, LOSS_NAMES)
        from fastreid.data.build import _TRAIN_SAMPLERS

        _check_choice(report, "DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, _TRAIN_SAMPLERS)
        if cfg.SOLVER.AMP.ENABLED:
            _check_choice(report, "SOLVER.AMP.DTYPE", cfg.SOLVER.AMP.DTYPE, ("float16", "bfloat16"))
    wanted = ([("DATASETS.NAMES", n) for n in cfg.DATASETS.NAMES] if train else []) + \
        ([("DATASETS.TESTS", n) for n in cfg.DATASETS.TESTS] if evaluate else [])
    if train and cfg.TEST.PRECISE_BN.ENABLED:
        wanted.append(("TEST.PRECISE_BN.DATASET", cfg.TEST.PRECISE_BN.DATASET))
    for key, name in wanted:
        _check_choice(report, f"{key} entry", name, DATASET_REGISTRY.names())
    return [name for _, name in wanted if name in DATASET_REGISTRY]


def _uses_baseline_losses(meta_arch: str) -> bool:
    """Whether the meta-architecture computes Baseline's losses (a project's own ``losses`` names its own)."""
    from fastreid.modeling.meta_arch import Baseline
    from fastreid.utils.registry import META_ARCH_REGISTRY

    cls = META_ARCH_REGISTRY.get(meta_arch) if meta_arch in META_ARCH_REGISTRY else Baseline
    return getattr(cls, "losses", None) is Baseline.losses


def _try(report: PreflightReport, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # every builder error becomes one line of the report
        report.errors.append(f"{what}: {e}")
        return None


def _check_builders(cfg: CfgNode, report: PreflightReport, train: bool) -> None:
    """Transforms, optimizer and schedule built on a dummy module: the real code validates its own values."""
    from fastreid.data.transforms import build_transforms
    from fastreid.solver import build_lr_scheduler, build_optimizer

    _try(report, "Test transforms (INPUT.*)", lambda: build_transforms(cfg, is_train=False))
    if train:
        _try(report, "Training transforms (INPUT.*)", lambda: build_transforms(cfg, is_train=True))
        with _quiet("fastreid.solver"):
            opt = _try(report, "Optimizer (SOLVER.*)", lambda: build_optimizer(cfg, nn.Linear(2, 2)))
            if opt is not None:
                _try(report, "LR schedule (SOLVER.*)", lambda: build_lr_scheduler(cfg, opt, 1))


def _check_dataset(cfg: CfgNode, name: str, role: str, splits: Sequence[str], report: PreflightReport,
                   missing: List[str], identity_sizes: Counter, built: Dict[str, Any]) -> None:
    """Build ``name`` once (``built`` caches it, None when it failed) and check the ``splits`` of its role."""
    from fastreid.data.build import load_dataset

    if name not in built:
        try:
            with _quiet("fastreid.data"):
                built[name] = load_dataset(cfg, name)
        except Exception as e:  # any construction error (missing list or folder, bad line) is one report line
            built[name] = None
            text = str(e)
            report.errors.append(text if text.startswith(name) else f"Dataset {name}: {text}")
    ds = built[name]
    if ds is None:
        return
    summary = DatasetSummary(name, role, labeled=bool(getattr(ds, "labeled", True)))
    origins = getattr(ds, "origins", {})
    for split in splits:
        items = list(getattr(ds, split, None) or [])
        if not items:
            report.errors.append(f"Dataset {name} (root {getattr(ds, 'root', '?')}): the {split} split is empty")
        setattr(summary, split, len(items))
        if split == "train":
            counts = Counter(str(pid) for _, pid, _ in items)
            summary.ids = len(counts)
            identity_sizes.update(counts)
        for path, _, _ in items:
            report.files_checked += 1
            if not os.path.isfile(path):
                where = origins.get(path)
                missing.append(f"{path}" + (f" (listed at {where})" if where else f" ({name} {split})"))
    report.datasets.append(summary)


def _check_weights(cfg: CfgNode, report: PreflightReport, train: bool, evaluate: bool) -> None:
    weights = cfg.MODEL.WEIGHTS
    if not train:
        if not weights:
            report.errors.append("MODEL.WEIGHTS is empty: evaluation needs a trained checkpoint (set MODEL.WEIGHTS "
                                 f"to a .pth file; MODEL.WEIGHTS {RANDOM_WEIGHTS} evaluates an untrained model on "
                                 f"purpose)")
        elif weights != RANDOM_WEIGHTS and not os.path.isfile(weights):
            report.errors.append(f"MODEL.WEIGHTS {weights}: file not found")
        return
    if weights == RANDOM_WEIGHTS:
        report.errors.append(f"MODEL.WEIGHTS {RANDOM_WEIGHTS} is for evaluation only; leave it empty to train from "
                             f"the initialisation")
    elif weights and not os.path.isfile(weights):
        report.errors.append(f"MODEL.WEIGHTS {weights}: file not found")
    b = cfg.MODEL.BACKBONE
    if b.PRETRAIN and b.PRETRAIN_PATH and not os.path.isfile(b.PRETRAIN_PATH):
        report.errors.append(f"MODEL.BACKBONE.PRETRAIN_PATH {b.PRETRAIN_PATH}: file not found")


def _check_outputs(cfg: CfgNode, report: PreflightReport, train: bool, evaluate: bool, resume: bool) -> None:
    out = cfg.OUTPUT_DIR
    report.outputs.append(("OUTPUT_DIR", out))
    if os.path.exists(out) and not os.path.isdir(out):
        report.errors.append(f"OUTPUT_DIR {out} exists and is not a folder")
    else:
        reason = _probe_writable(out)
        if reason:
            report.errors.append(f"OUTPUT_DIR {out} is not writable: {reason}")
    if train and not resume:
        earlier = earlier_run_files(out)
        if earlier:
            report.errors.append(
                f"OUTPUT_DIR {out} holds an earlier run ({len(earlier)} files):\n{_capped(earlier)}\n"
                f"    A new run would mix its checkpoints, metrics and results with these. Continue that run with "
                f"--resume, or choose another OUTPUT_DIR (or move the folder away).")
    if evaluate and writes_result(cfg):
        path = result_path(cfg)
        report.outputs.append(("result.npy (TEST.RESULT_PATH)", path))
        if os.path.isdir(path):
            report.errors.append(f"TEST.RESULT_PATH {path} is a folder; give the file name (e.g. {path}/result.npy)")
        else:
            reason = _probe_writable(os.path.dirname(os.path.abspath(path)))
            if reason:
                report.errors.append(f"TEST.RESULT_PATH {path} is not writable: {reason}")


def preflight(cfg: CfgNode, *, train: bool, evaluate: bool = True, resume: bool = False,
              check_weights: bool = True) -> PreflightReport:
    """Check everything ``cfg`` will use; never raises for a bad input, every problem is in the report.

    Args:
        cfg: the config of one run (one stage).
        train: the run trains (training datasets, losses, sampler, solver, a fresh OUTPUT_DIR unless ``resume``).
        evaluate: the run evaluates ``DATASETS.TESTS`` (always after training, unless TESTS is empty).
        resume: the run continues the one in OUTPUT_DIR.
        check_weights: check MODEL.WEIGHTS (off for a later stage, whose weights the previous stage writes).
    """
    report = PreflightReport()
    evaluate = evaluate and bool(cfg.DATASETS.TESTS)
    if not train and not cfg.DATASETS.TESTS:
        report.errors.append("DATASETS.TESTS is empty: there is nothing to evaluate")
    if train and not cfg.DATASETS.NAMES:
        report.errors.append("DATASETS.NAMES is empty: there is nothing to train on")
    _try(report, "MODEL.DEVICE", lambda: torch.device(cfg.MODEL.DEVICE))
    report.errors += unapplied_values(cfg)
    known = _check_names(cfg, report, train, evaluate)
    _check_builders(cfg, report, train)
    if check_weights:
        _check_weights(cfg, report, train, evaluate)
    missing: List[str] = []
    identity_sizes: Counter = Counter()
    built: Dict[str, Any] = {}
    if train:
        for name in cfg.DATASETS.NAMES:
            if name in known:
                _check_dataset(cfg, name, "train", ("train",), report, missing, identity_sizes, built)
    if evaluate:
        for name in cfg.DATASETS.TESTS:
            if name in known:
                _check_dataset(cfg, name, "test", ("query", "gallery"), report, missing, identity_sizes, built)
    if missing:
        report.errors.append(f"{len(missing)} listed image(s) do not exist:\n{_capped(missing)}")
    k = int(cfg.DATALOADER.NUM_INSTANCE)
    if train and cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler" and identity_sizes:
        largest = max(identity_sizes.values())
        if k > largest:
            report.warnings.append(
                f"DATALOADER.NUM_INSTANCE is {k} but no training identity has more than {largest} images: every "
                f"identity's images are repeated within a batch to fill {k} places")
    _check_outputs(cfg, report, train, evaluate, resume)
    return report
