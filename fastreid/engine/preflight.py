"""Everything a command will use, checked before any model is built: the preflight.

A mistake on the evaluation side (a misspelt test set, a missing validation image, an unwritable
result path) must cost seconds, not a training run. :func:`preflight` builds every dataset the command
reads, stats (never decodes) every listed file, looks up every registry name and enumerated value,
probes the output folders and collects *all* problems into one report; ``PreflightReport.raise_if_failed``
turns them into one :class:`PreflightError`. See docs/guarantees.md.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from tabulate import tabulate
from torch import nn

from fastreid.config import CfgNode
from fastreid.config.checks import capped_list, choice_problem
from fastreid.config.fastreid_compat import unapplied_values
from fastreid.modeling.eval_model import RANDOM_WEIGHTS

from .output_dir import check_outputs, earlier_run_files, remove_stale_result, result_path, writes_result

logger = logging.getLogger(__name__)

__all__ = ["PreflightError", "PreflightReport", "DatasetSummary", "preflight", "RANDOM_WEIGHTS", "result_path",
           "writes_result", "earlier_run_files", "remove_stale_result"]


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
    report.errors.extend(choice_problem(key, value, allowed))


def owner_checks(cfg: CfgNode, train: bool, evaluate: bool) -> List[str]:
    """Every value a builder owns, checked by the builder's own ``validate(cfg)`` (its public constants)."""
    from fastreid import solver
    from fastreid.data import build as data_build
    from fastreid.evaluation import pseudo_labels, reid_evaluation
    from fastreid.modeling.heads import embedding_head
    from fastreid.modeling.meta_arch import distiller

    from . import train_loop

    validators = [embedding_head.validate] + ([reid_evaluation.validate] if evaluate else []) + \
        ([data_build.validate, solver.validate, train_loop.validate, distiller.validate,
          pseudo_labels.validate] if train else [])
    return [problem for validate in validators for problem in validate(cfg)]


def _check_names(cfg: CfgNode, report: PreflightReport, train: bool, evaluate: bool) -> List[str]:
    """Registry names and every builder's values; returns the dataset names that exist."""
    import fastreid.data  # noqa: F401  (registers the datasets)
    import fastreid.modeling  # noqa: F401  (registers backbones, heads, meta-architectures)
    from fastreid.modeling.backbones.resnet import RESNET_SPECS
    from fastreid.modeling.layers.norm import NORM_NAMES
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
    report.errors += owner_checks(cfg, train, evaluate)
    if train and _uses_baseline_losses(m.META_ARCHITECTURE):
        for name in m.LOSSES.NAME:
            _check_choice(report, "MODEL.LOSSES.NAME entry", name, LOSS_NAMES)
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
        report.errors.append(f"{len(missing)} listed image(s) do not exist:\n{capped_list(missing)}")
    k = int(cfg.DATALOADER.NUM_INSTANCE)
    if train and cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler" and identity_sizes:
        largest = max(identity_sizes.values())
        if k > largest:
            report.warnings.append(
                f"DATALOADER.NUM_INSTANCE is {k} but no training identity has more than {largest} images: every "
                f"identity's images are repeated within a batch to fill {k} places")
    errors, outputs = check_outputs(cfg, train, evaluate, resume)
    report.errors += errors
    report.outputs += outputs
    return report
