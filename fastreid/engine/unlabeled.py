"""Learning from the user's unlabeled drawings: rounds of pseudo-labels and fine-tuning (docs/unlabeled.md).

Each round extracts features of the unlabeled pool (``UNLABELED.POOL_LIST``) with the current model, clusters
them into pseudo-identities (:func:`fastreid.evaluation.pseudo_labels.pseudo_labels`), writes the clustered
drawings as a list file ``OUTPUT_DIR/round<r>/pseudo_labels.txt`` (``<path> <label>``, outliers left out) and
fine-tunes the model for ``UNLABELED.EPOCHS`` epochs on ``DATASETS.NAMES`` plus that list, read by
``ListFileDataset`` (its ids get the ``ListFileDataset_`` prefix, so they never collide with the labeled
ones). Round ``r + 1`` starts from round ``r``'s ``model_final.pth``; round 1 from ``MODEL.WEIGHTS``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from fastreid.config import CfgNode, ConfigError
from fastreid.data.build import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets.bases import datasets_root, pick_base_dir
from fastreid.data.transforms import build_transforms
from fastreid.evaluation.evaluator import DatasetEvaluator, inference_on_dataset
from fastreid.evaluation.pseudo_labels import pseudo_labels, validate
from fastreid.modeling.eval_model import build_eval_model, eval_config
from fastreid.utils import comm
from fastreid.utils.checkpoint import load_checkpoint_file, split_checkpoint
from fastreid.utils.file_io import atomic_open

from .defaults import default_setup, setup_cfg
from .output_dir import earlier_run_files
from .stages import has_stages
from .trainer import DefaultTrainer

logger = logging.getLogger(__name__)

__all__ = ["read_pool", "pool_features", "write_pseudo_list", "round_config", "run_rounds", "unlabeled_main"]

POOL_DATASET = "ListFileDataset"


def read_pool(cfg: CfgNode) -> List[str]:
    """The drawings of ``UNLABELED.POOL_LIST``: the first column of each line, relative to the list's folder
    (or its parent, when only there the first path exists: the codalab ``lists/`` layout).

    Raises:
        ConfigError: the key is empty. FileNotFoundError: the list or a listed drawing is missing.
        ValueError: the list is empty or names a drawing twice (both lines named).
    """
    key = cfg.UNLABELED.POOL_LIST
    if not key:
        raise ConfigError("UNLABELED.POOL_LIST is empty: name the list of unlabeled drawings (e.g. "
                          "train_data/val_db_patent.txt, relative to DATASETS.ROOT)")
    path = key if os.path.isabs(key) else os.path.join(datasets_root(cfg), key)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"UNLABELED.POOL_LIST {key}: list file not found ({path})")
    folder = os.path.dirname(os.path.abspath(path))
    base = pick_base_dir(path, [folder, os.path.dirname(folder)])
    paths: List[str] = []
    seen: Dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            img = os.path.normpath(os.path.join(base, line.split()[0]))
            if img in seen:
                raise ValueError(f"{path}:{lineno}: {img} is listed twice (first at line {seen[img]})")
            if not os.path.isfile(img):
                raise FileNotFoundError(f"{path}:{lineno}: drawing not found: {img}")
            seen[img] = lineno
            paths.append(img)
    if not paths:
        raise ValueError(f"UNLABELED.POOL_LIST {path} lists no drawing")
    return paths


class _FeatureCollector(DatasetEvaluator):
    """Keeps the features of every batch; :meth:`evaluate` returns nothing, :attr:`features` all of them
    in list order (every process's shard, gathered in rank order)."""

    def reset(self) -> None:
        self.parts: List[torch.Tensor] = []

    def process(self, inputs: Dict[str, Any], outputs: torch.Tensor) -> None:
        self.parts.append(outputs.detach().cpu())

    @property
    def features(self) -> torch.Tensor:
        local = torch.cat(self.parts) if self.parts else torch.zeros(0)
        return torch.cat([p for p in comm.all_gather(local) if p.numel()])


def pool_features(cfg: CfgNode, model: torch.nn.Module, paths: Sequence[str]) -> torch.Tensor:
    """``N x D`` features of the drawings ``paths`` (in order), read and extracted as test images are."""
    dataset = CommDataset([(p, -1, 0) for p in paths], build_transforms(cfg, is_train=False), relabel=False,
                          grayscale=bool(cfg.INPUT.GRAYSCALE), labeled=False)
    loader, _ = build_reid_test_loader(cfg, test_set=dataset)
    collector = _FeatureCollector()
    inference_on_dataset(model, loader, collector, flip_test=bool(cfg.TEST.FLIP.ENABLED),
                         amp_dtype=cfg.TEST.AMP_DTYPE)
    return collector.features


def write_pseudo_list(path: str, paths: Sequence[str], labels: np.ndarray) -> int:
    """Write ``<path> <label>`` for every clustered drawing (label >= 0) to ``path``, atomically; returns how
    many lines were written. Paths are written absolute, so the list reads the same from any folder."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} drawings but {len(labels)} labels")
    kept = [(os.path.abspath(p), int(label)) for p, label in zip(paths, labels) if label >= 0]
    if any(" " in p for p, _ in kept):
        raise ValueError(f"a pool drawing's path has a space, which a list file cannot hold: "
                         f"{next(p for p, _ in kept if ' ' in p)}")
    with atomic_open(path, "w") as f:
        f.writelines(f"{p} {label}\n" for p, label in kept)
    return len(kept)


def round_config(cfg: CfgNode, index: int, weights: str, pseudo_list: str) -> CfgNode:
    """The frozen training config of round ``index`` (from 1): ``cfg`` fine-tuned from ``weights`` for
    ``UNLABELED.EPOCHS`` epochs on its training sets plus ``pseudo_list`` (none when empty)."""
    out = cfg.clone()
    out.defrost()
    if pseudo_list:
        out.DATASETS.NAMES = tuple(cfg.DATASETS.NAMES) + (POOL_DATASET,)
        out.DATASETS.CUSTOM.TRAIN_LIST = os.path.abspath(pseudo_list)
        out.DATASETS.CUSTOM.IMAGE_ROOT = ""
    out.MODEL.WEIGHTS = weights
    out.MODEL.BACKBONE.PRETRAIN = False
    # The pseudo-identities change every round: the classifier is sized (and re-initialised) from the data.
    out.MODEL.HEADS.NUM_CLASSES = 0
    out.SOLVER.MAX_EPOCH = int(cfg.UNLABELED.EPOCHS)
    out.SOLVER.MAX_ITER = 0
    if float(cfg.UNLABELED.BASE_LR) > 0:
        out.SOLVER.BASE_LR = float(cfg.UNLABELED.BASE_LR)
    out.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, f"round{index}")
    out.freeze()
    return out


def carry_classifier(module: torch.nn.Module, source: str, source_classes: Sequence[str],
                     classes: Dict[str, int]) -> int:
    """Copy into ``module``'s classifier (``heads.weight``) the rows of the classes it shares with the
    checkpoint ``source``, whose row ``i`` is class ``source_classes[i]``; returns how many were copied.

    The loader skips the classifier when the number of classes changed (a new set of pseudo-identities), so
    without this the labeled patents would lose what their rows learnt; pseudo-identities keep the head's
    initialisation. Nothing is copied when the checkpoint's rows do not match ``source_classes``.
    """
    state, _ = split_checkpoint(load_checkpoint_file(source), source)
    old = state.get("heads.weight")
    new = getattr(getattr(module, "heads", None), "weight", None)
    if old is None or new is None or old.shape[0] != len(source_classes) or old.shape[1:] != new.shape[1:]:
        logger.info("Classifier of %s not carried over (%s rows for %d known classes)", source,
                    None if old is None else old.shape[0], len(source_classes))
        return 0
    pairs = [(i, classes[name]) for i, name in enumerate(source_classes) if name in classes]
    if pairs:
        src, dst = (torch.tensor(v) for v in zip(*pairs))
        with torch.no_grad():
            new[dst.to(new.device)] = old[src].to(new.device, new.dtype)
    return len(pairs)


def _source_classes(classes: Dict[str, int], previous_list: str) -> List[str]:
    """The classes, in row order, of the model a round starts from: the labeled ones of this round plus the
    pseudo-identities of the previous round's list (none for round 1), sorted as the loader sorts them."""
    names = {c for c in classes if not c.startswith(POOL_DATASET + "_")}
    if previous_list and os.path.isfile(previous_list):
        with open(previous_list, encoding="utf-8") as f:
            names |= {f"{POOL_DATASET}_{line.split()[1]}" for line in f if line.strip()}
    return sorted(names)


def _check(cfg: CfgNode, resume: bool) -> None:
    problems = validate(cfg)
    if POOL_DATASET in cfg.DATASETS.NAMES:
        problems.append(f"DATASETS.NAMES already holds {POOL_DATASET}, whose DATASETS.CUSTOM.TRAIN_LIST the rounds "
                        f"set to their pseudo-labels: train on that list through another dataset name")
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        problems.append(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: the rounds start from a trained checkpoint file")
    if not resume:
        earlier = [f for i in range(1, int(cfg.UNLABELED.ROUNDS) + 1)
                   for f in earlier_run_files(os.path.join(cfg.OUTPUT_DIR, f"round{i}"))]
        if earlier:
            problems.append(f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds an earlier run's rounds ({earlier[0]}): choose "
                            f"another OUTPUT_DIR, or --resume to finish it")
    if problems:
        raise ConfigError("; ".join(problems))


def _cluster_pool(cfg: CfgNode, weights: str, paths: Sequence[str]) -> np.ndarray:
    """Pseudo-labels of the pool drawings from the features of the model ``weights``."""
    extract_cfg = cfg.clone()
    extract_cfg.defrost()
    extract_cfg.MODEL.WEIGHTS = weights
    extract_cfg.freeze()
    extract_cfg = eval_config(extract_cfg)
    feats = pool_features(extract_cfg, build_eval_model(extract_cfg), paths)
    u = cfg.UNLABELED
    return pseudo_labels(feats, float(u.EPS), int(u.MIN_SAMPLES), int(u.K1), int(u.K2))


def run_rounds(cfg: CfgNode, args: argparse.Namespace, resume: bool = False, use_pool: bool = True) -> Dict[str, Any]:
    """Run the ``UNLABELED.ROUNDS`` rounds; returns the last round's evaluation results.

    With ``resume``, finished rounds (``model_final.pth`` present) are skipped, so a stopped run continues
    with the round it was in (that round starts again). ``use_pool=False`` is the control of a comparison:
    the same rounds on the labeled data alone (no extraction, no clustering).
    """
    _check(cfg, resume)
    paths = read_pool(cfg) if use_pool else []
    weights, results = cfg.MODEL.WEIGHTS, {}
    u = cfg.UNLABELED
    for index in range(1, int(u.ROUNDS) + 1):
        folder = os.path.join(cfg.OUTPUT_DIR, f"round{index}")
        final = os.path.join(folder, "model_final.pth")
        if resume and os.path.isfile(final):
            logger.info("Round %d already finished in %s; skipped", index, folder)
            weights = final
            continue
        labels = _cluster_pool(cfg, weights, paths) if use_pool else np.zeros(0, dtype=np.int64)
        sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
        summary = {"round": index, "weights": weights, "pool": len(paths), "clusters": int(len(sizes)),
                   "clustered": int(sizes.sum()), "outliers": int((labels < 0).sum()),
                   "largest_cluster": int(sizes.max()) if len(sizes) else 0,
                   "mean_cluster_size": float(sizes.mean()) if len(sizes) else 0.0}
        pseudo_list = os.path.join(folder, "pseudo_labels.txt")
        if comm.is_main_process():
            os.makedirs(folder, exist_ok=True)
            write_pseudo_list(pseudo_list, paths, labels)
            with atomic_open(os.path.join(folder, "pseudo_labels.json"), "w") as f:
                json.dump(summary, f, indent=1)
        comm.synchronize()
        if use_pool and summary["largest_cluster"] > len(paths) / 2:
            logger.warning("Round %d: one cluster holds %d of the %d pool drawings: the clustering collapsed (weak "
                           "features); lower UNLABELED.EPS or UNLABELED.K1", index, summary["largest_cluster"],
                           len(paths))
        if use_pool and not len(sizes):
            logger.warning("Round %d: no cluster among the %d pool drawings (UNLABELED.EPS %s, MIN_SAMPLES %s); "
                           "the round trains on the labeled data alone", index, len(paths), u.EPS, u.MIN_SAMPLES)
        logger.info("Round %d: %d pool drawings -> %d clusters holding %d (mean size %.2f, largest %d), %d "
                    "outliers; list %s", index, len(paths), summary["clusters"], summary["clustered"],
                    summary["mean_cluster_size"], summary["largest_cluster"], summary["outliers"], pseudo_list)
        round_cfg = round_config(cfg, index, weights, pseudo_list if len(sizes) else "")
        default_setup(round_cfg, args)
        trainer = DefaultTrainer(round_cfg)
        trainer.resume_or_load(resume=False)
        classes = trainer.data_loader.dataset.pid_dict
        previous = os.path.join(cfg.OUTPUT_DIR, f"round{index - 1}", "pseudo_labels.txt") if index > 1 else ""
        copied = carry_classifier(trainer.module, weights, _source_classes(classes, previous), classes)
        logger.info("Round %d: %d of %d classifier rows carried over from %s", index, copied, len(classes), weights)
        results = trainer.train()
        comm.synchronize()
        weights = final
    return results


def unlabeled_main(args: argparse.Namespace) -> Dict[str, Any]:
    """Body of ``tools/pseudo_label.py`` in every process: the rounds of the config's ``UNLABELED.*``."""
    if has_stages(args.config_file):
        raise ConfigError(f"{args.config_file} lists STAGES: give the rounds one stage's config file (and its "
                          f"trained model as MODEL.WEIGHTS)")
    return run_rounds(setup_cfg(args), args, resume=bool(args.resume))
