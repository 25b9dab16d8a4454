"""DeepPatent design-patent drawings and the DIRA challenge's unlabeled test set.

Expected layout under the datasets root::

    train_data/train_patent_trn.txt, train_patent_val.txt, val_query_patent.txt, val_db_patent.txt
    train_data/patent_data/<week>/<patent>/<sheet>.png
    test_data/codalab_test_set/{queries,database,lists}   (or codalab_test_set/ directly)

List lines are ``<relative path> <label>``, paths relative to the list file's folder (lists whose
paths start below ``patent_data/`` are accepted too), labels numbered from 1 within each list.
"""
from __future__ import annotations

import os
from typing import Optional

from fastreid.config import CfgNode
from fastreid.utils.registry import DATASET_REGISTRY

from .bases import ImageDataset, pick_base_dir, read_list


@DATASET_REGISTRY.register()
class DeepPatent(ImageDataset):
    """Train on ``train_patent_trn.txt`` (plus ``train_patent_val.txt`` with ``DATASETS.COMBINEALL``),
    validate with ``val_query_patent.txt`` against ``val_db_patent.txt``."""

    def __init__(self, root: str = "", cfg: Optional[CfgNode] = None) -> None:
        super().__init__(root=root, cfg=cfg)
        data_dir = os.path.join(self.root, "train_data")
        lists = {k: os.path.join(data_dir, f) for k, f in (
            ("trn", "train_patent_trn.txt"), ("val", "train_patent_val.txt"),
            ("query", "val_query_patent.txt"), ("db", "val_db_patent.txt"))}
        if not os.path.isfile(lists["trn"]):
            raise FileNotFoundError(
                f"DeepPatent: {lists['trn']} not found; set DATASETS.ROOT (or $FASTREID_DATASETS) to the "
                f"folder that holds train_data/")
        bases = [data_dir, os.path.join(data_dir, "patent_data")]

        def load(key: str):
            return read_list(lists[key], pick_base_dir(lists[key], bases), origins=self.origins)

        trn = load("trn")
        self.train = [(p, self.train_pid(label), cam) for p, label, cam in trn]
        if cfg is not None and cfg.DATASETS.COMBINEALL:
            # Labels restart at 1 in every list: shift the val labels past the train ones.
            offset = max((label for _, label, _ in trn), default=0)
            self.train += [(p, self.train_pid(label + offset), cam) for p, label, cam in load("val")]
        self.query = load("query")
        self.gallery = load("db")
        self.finish()


def find_codalab_root(root: str) -> str:
    """``<root>/test_data/codalab_test_set`` or ``<root>/codalab_test_set``, whichever exists."""
    candidates = [os.path.join(root, "test_data", "codalab_test_set"), os.path.join(root, "codalab_test_set")]
    for c in candidates:
        if os.path.isdir(c):
            return c
    raise FileNotFoundError(f"DeepPatentTest: none of {candidates} exists; set DATASETS.ROOT (or "
                            f"$FASTREID_DATASETS) to the folder that holds test_data/codalab_test_set")


@DATASET_REGISTRY.register()
class DeepPatentTest(ImageDataset):
    """The challenge test set: ``lists/test_queries.txt`` and ``lists/test_database.txt`` hold paths
    only (relative to ``codalab_test_set/``, or bare names inside ``queries/`` and ``database/``), so
    ids are -1 and ``labeled`` is False. No train split."""

    labeled = False

    def __init__(self, root: str = "", cfg: Optional[CfgNode] = None) -> None:
        super().__init__(root=root, cfg=cfg)
        base = find_codalab_root(self.root)
        splits = (("query", "test_queries.txt", "queries"), ("gallery", "test_database.txt", "database"))
        for split, name, folder in splits:
            path = os.path.join(base, "lists", name)
            base_dir = pick_base_dir(path, [base, os.path.join(base, folder)])
            setattr(self, split, read_list(path, base_dir, labeled=False, origins=self.origins))
        self.finish()


@DATASET_REGISTRY.register()
class Patent(DeepPatent):
    """The DIRA challenge code's name for :class:`DeepPatent` (same layout and lists), so that its
    configs (``DATASETS.NAMES: ("Patent",)``) run unchanged."""


@DATASET_REGISTRY.register()
class PatentTest(DeepPatentTest):
    """The DIRA challenge code's name for :class:`DeepPatentTest` (it read ``<root>/codalab_test_set``,
    which is accepted next to ``<root>/test_data/codalab_test_set``)."""
