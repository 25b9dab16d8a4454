"""Synthetic design patents written in the exact DeepPatent layout (the demo and test data set).

Each patent is one procedural object (:mod:`fastreid.data.synthetic.shapes`) drawn as black lines on white
from a random subset of the design-patent views (the perspective view always included, like the
first sheet of a design patent). Patents come in families of similar objects, so that retrieval
needs the details. Output (``root`` = the output folder)::

    train_data/train_patent_trn.txt  train_patent_val.txt  val_query_patent.txt  val_db_patent.txt
    train_data/patent_data/I<issue date>/USD0<number>-<date>/USD0<number>-<date>-D0000<k>.png
    test_data/codalab_test_set/{queries,database}/<n>.png
    test_data/codalab_test_set/lists/test_queries.txt, test_database.txt             (paths only)
    test_data/codalab_test_set/lists/test_queries_labels.txt, test_database_labels.txt  (ground truth)
    synthetic_info.json

Everything is a pure function of the arguments: the same seed gives byte-identical files, with
any number of worker processes.
"""
from __future__ import annotations

import datetime
import json
import logging
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from fastreid.utils.file_io import atomic_open

from ..datasets.custom import query_count
from ..datasets.deeppatent import find_codalab_root
from .drawing_sheet import check_effects, render_sheet, sample_look
from .line_render import ORTHO_VIEWS, render_view
from .shapes import BASE_KINDS, build_mesh, sample_family, sample_member

logger = logging.getLogger(__name__)


def check_views_and_splits(min_views: int, max_views: int, fewest: int, train_fraction: float,
                           val_fraction: float) -> None:
    """Refuse view counts outside ``fewest..7`` and split shares that leave no test split."""
    if not fewest <= min_views <= max_views <= 7:
        raise ValueError(f"need {fewest} <= min_views <= max_views <= 7, got {min_views}, {max_views}")
    if not (0 < train_fraction and 0 < val_fraction and train_fraction + val_fraction < 1):
        raise ValueError(f"train_fraction and val_fraction must be > 0 with a sum < 1 (the rest is test), "
                         f"got {train_fraction}, {val_fraction}")


@dataclass
class SyntheticSpec:
    """What to generate; see ``tools/make_synthetic_patents.py`` for the meaning of each field."""

    num_patents: int = 1000
    image_size: int = 128
    seed: int = 0
    min_views: int = 3
    max_views: int = 7
    family_size: Tuple[int, int] = (2, 4)
    train_fraction: float = 0.6
    val_fraction: float = 0.2
    # Sheet effects (fastreid.data.synthetic.drawing_sheet.SHEET_EFFECTS); empty: the clean style.
    effects: Tuple[str, ...] = ()
    # Base shapes families may use (shapes.BASE_KINDS); empty: all. Holds shape families out.
    base_kinds: Tuple[str, ...] = ()
    # Base shapes whose families only appear in validation and test (never in training); the share
    # of such patents then sets the training share, and train_fraction is not used.
    holdout_kinds: Tuple[str, ...] = ()

    def check(self) -> None:
        if self.num_patents < 3:
            raise ValueError(f"num_patents must be >= 3 (train, val and test each need a patent), "
                             f"got {self.num_patents}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        check_views_and_splits(self.min_views, self.max_views, 1, self.train_fraction, self.val_fraction)
        if not 1 <= self.family_size[0] <= self.family_size[1]:
            raise ValueError(f"family_size must be (low, high) with 1 <= low <= high, got {self.family_size}")
        check_effects(self.effects)
        unknown = [k for k in (*self.base_kinds, *self.holdout_kinds) if k not in BASE_KINDS]
        if unknown:
            raise ValueError(f"Unknown base kind(s) {unknown}; expected a subset of {BASE_KINDS}")
        kinds = self.base_kinds or BASE_KINDS
        if self.holdout_kinds and not (set(self.holdout_kinds) < set(kinds)):
            raise ValueError(f"holdout_kinds {self.holdout_kinds} must be a proper subset of the base kinds "
                             f"{kinds}: training needs the others")


@dataclass
class PlannedPatent:
    index: int
    family: int
    name: str
    week: str
    split: str
    views: List[str]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def plan_patents(spec: SyntheticSpec) -> Tuple[List[PlannedPatent], List[dict]]:
    """Families, patent names, issue weeks, splits and views: everything except the drawings."""
    rng = _rng(spec.seed, 0)
    families, owner = [], []
    while len(owner) < spec.num_patents:
        families.append(sample_family(_rng(spec.seed, 1, len(families)), spec.base_kinds or BASE_KINDS))
        owner += [len(families) - 1] * int(rng.integers(spec.family_size[0], spec.family_size[1] + 1))
    owner = rng.permutation(np.asarray(owner[:spec.num_patents]))
    if spec.holdout_kinds:
        split_of = _holdout_splits(spec, [families[f]["base"] in spec.holdout_kinds for f in owner], rng)
    else:
        n_train = max(1, int(round(spec.num_patents * spec.train_fraction)))
        n_val = max(1, int(round(spec.num_patents * spec.val_fraction)))
        n_train = min(n_train, spec.num_patents - 2)
        n_val = min(n_val, spec.num_patents - n_train - 1)
        split_of = rng.permutation(["train"] * n_train + ["val"] * n_val
                                   + ["test"] * (spec.num_patents - n_train - n_val))
    per_week = 25
    patents = []
    for i in range(spec.num_patents):
        day = datetime.date(2018, 1, 2) + datetime.timedelta(weeks=i // per_week)  # issue Tuesdays
        date = day.strftime("%Y%m%d")
        n_views = int(rng.integers(spec.min_views, spec.max_views + 1))
        ortho = sorted(rng.choice(len(ORTHO_VIEWS), size=n_views - 1, replace=False).tolist())
        patents.append(PlannedPatent(i, int(owner[i]), f"USD0{810000 + i}-{date}", f"I{date}", str(split_of[i]),
                               ["perspective"] + [ORTHO_VIEWS[k] for k in ortho]))
    return patents, families


def _holdout_splits(spec: SyntheticSpec, held: List[bool], rng: np.random.Generator) -> np.ndarray:
    """Training split for the patents of other base shapes; the held-out ones are shared between
    validation and test in the ratio val_fraction : (1 - train_fraction - val_fraction)."""
    held_idx = np.flatnonzero(held)
    if len(held_idx) < 2 or len(held_idx) == len(held):
        raise ValueError(f"holdout_kinds {spec.holdout_kinds}: {len(held_idx)} of {len(held)} patents are held "
                         f"out; need at least 2 (validation and test) and at least one to train on")
    val_share = spec.val_fraction / (1 - spec.train_fraction)
    n_val = min(max(1, int(round(len(held_idx) * val_share))), len(held_idx) - 1)
    split_of = np.full(len(held), "train", dtype=object)
    split_of[held_idx] = rng.permutation(["val"] * n_val + ["test"] * (len(held_idx) - n_val))
    return split_of.astype(str)


def render_patent(seed: int, size: int, family: dict, views: List[str], index: int,
                  effects: Tuple[str, ...] = (), always: bool = False) -> List[np.ndarray]:
    """The uint8 drawings of patent ``index`` (of ``family``) from ``views``, in the given style.

    The sheet effects draw from their own stream, so a patent's object, angles and margins are the
    same in the clean and the sheet style of one seed. ``always``: every effect on every sheet.
    """
    rng = _rng(seed, 2, index)
    sheet_rng = _rng(seed, 4, index)
    look = sample_look(sheet_rng, effects, always) if effects else None
    mesh = build_mesh(sample_member(family, rng))
    yaw = np.radians(rng.uniform(25, 50)) * (1 if rng.random() < 0.5 else -1)
    pitch = np.radians(rng.uniform(15, 35))
    out = []
    for fig, view in enumerate(views, start=1):
        margin = float(rng.uniform(0.04, 0.12))
        if look is None:
            out.append(render_view(mesh, view, size, margin=margin, yaw=yaw, pitch=pitch))
        else:
            out.append(render_sheet(mesh, view, size, look, sheet_rng, effects, margin=margin, yaw=yaw,
                                    pitch=pitch, fig=fig, n_sheets=len(views)))
    return out


def _render_patent(job: Tuple[int, int, dict, List[str], List[str], int, Tuple[str, ...]]) -> None:
    """Draw one patent's views to the given paths (runs in a worker process)."""
    seed, size, family, views, paths, index, effects = job
    for img, path in zip(render_patent(seed, size, family, views, index, effects), paths):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(img).save(path)


def _write_lines(path: str, lines: List[str]) -> None:
    with atomic_open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def layout_patents(output: str, patents: List[PlannedPatent], rng: np.random.Generator
                   ) -> Tuple[List[List[str]], Dict[str, List[str]], Dict[str, int]]:
    """Where each drawing of each patent goes in the DeepPatent layout, and the list files' lines.

    Query drawings follow the DeepPatent rule (``query_count``); test drawings get anonymous names
    in a shuffled order, so neither name nor order tells the label.

    Returns:
        ``(paths, lists, counts)``: the output path of every view of every patent (in ``patents``
        order), the lines of every list file keyed by its path relative to ``output``, and counts.
    """
    train_dir = "train_data"
    codalab = os.path.join("test_data", "codalab_test_set")
    paths: List[List[str]] = []
    lists: Dict[str, List[str]] = {k: [] for k in ("trn", "val_q", "val_db")}
    test_q: List[Tuple[int, int, str]] = []
    test_db: List[Tuple[int, int, str]] = []
    label = {"train": 0, "val": 0, "test": 0}
    for slot, p in enumerate(patents):
        label[p.split] += 1
        n = len(p.views)
        is_query = np.zeros(n, dtype=bool)
        is_query[rng.choice(n, size=query_count(n), replace=False)] = True
        if p.split == "test":
            for v in range(n):
                (test_q if is_query[v] else test_db).append((slot, v, str(label["test"])))
            paths.append([""] * n)
            continue
        rel = [f"patent_data/{p.week}/{p.name}/{p.name}-D{v + 1:05d}.png" for v in range(n)]
        for v in range(n):
            key = "trn" if p.split == "train" else ("val_q" if is_query[v] else "val_db")
            lists[key].append(f"{rel[v]} {label[p.split]}")
        paths.append([os.path.join(output, train_dir, r) for r in rel])
    files = {os.path.join(train_dir, "train_patent_trn.txt"): lists["trn"],
             os.path.join(train_dir, "val_query_patent.txt"): lists["val_q"],
             os.path.join(train_dir, "val_db_patent.txt"): lists["val_db"],
             os.path.join(train_dir, "train_patent_val.txt"): sorted(lists["val_q"] + lists["val_db"])}
    for folder, entries, listname in (("queries", test_q, "test_queries"), ("database", test_db, "test_database")):
        order = rng.permutation(len(entries))
        width = max(6, len(str(len(entries))))
        names, labels = [], []
        for rank, k in enumerate(order):
            slot, v, lab = entries[k]
            rel = f"{folder}/{rank:0{width}d}.png"
            paths[slot][v] = os.path.join(output, codalab, rel)
            names.append(rel)
            labels.append(lab)
        files[os.path.join(codalab, "lists", listname + ".txt")] = names
        files[os.path.join(codalab, "lists", listname + "_labels.txt")] = labels
    counts = {"patents": len(patents), "train_patents": label["train"], "val_patents": label["val"],
              "test_patents": label["test"], "train_images": len(lists["trn"]),
              "val_query_images": len(lists["val_q"]), "val_db_images": len(lists["val_db"]),
              "test_query_images": len(test_q), "test_db_images": len(test_db)}
    return paths, files, counts


def write_list_files(output: str, files: Dict[str, List[str]]) -> None:
    """Write the list files of :func:`layout_patents` (after the images, so a list never names a
    drawing that is not there yet)."""
    for rel, lines in files.items():
        _write_lines(os.path.join(output, rel), lines)


def run_jobs(fn, jobs: list, workers: int) -> list:
    """``[fn(job) for job in jobs]`` in ``workers`` processes (0: one per CPU core)."""
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            return list(pool.imap(fn, jobs, chunksize=1 if len(jobs) < 64 * workers else 8))
    return [fn(job) for job in jobs]


def generate(output: str, spec: Optional[SyntheticSpec] = None, workers: int = 0) -> Dict[str, int]:
    """Write a synthetic DeepPatent-style data set to ``output``; returns image/patent counts.

    ``workers`` processes draw the images (0: one per CPU core); the files do not depend on it.
    """
    spec = spec or SyntheticSpec()
    spec.check()
    patents, families = plan_patents(spec)
    paths, files, layout_counts = layout_patents(output, patents, _rng(spec.seed, 3))
    run_jobs(_render_patent, [(spec.seed, spec.image_size, families[p.family], p.views, paths[i], p.index,
                               tuple(spec.effects)) for i, p in enumerate(patents)], workers)
    write_list_files(output, files)
    counts = {"patents": spec.num_patents, "families": len(families)}
    counts.update({k: v for k, v in layout_counts.items() if k != "patents"})
    with atomic_open(os.path.join(output, "synthetic_info.json"), "w") as f:
        json.dump({"spec": asdict(spec), "counts": counts}, f, indent=2)
    logger.info("Synthetic patents in %s: %s", output, counts)
    return counts


def load_test_ground_truth(root: str) -> Tuple[np.ndarray, np.ndarray]:
    """Labels of the challenge-style test set, aligned with ``test_queries.txt``/``test_database.txt``.

    Args:
        root: the data set root (holding ``test_data/codalab_test_set`` or ``codalab_test_set``).

    Returns:
        ``(query_labels, database_labels)`` as int64 arrays.
    """
    lists = os.path.join(find_codalab_root(root), "lists")
    out = []
    for name in ("test_queries", "test_database"):
        label_file = os.path.join(lists, name + "_labels.txt")
        if not os.path.isfile(label_file):
            raise FileNotFoundError(f"No ground truth {label_file}: only synthetic test sets have labels")
        with open(label_file, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
        with open(os.path.join(lists, name + ".txt"), encoding="utf-8") as f:
            n_paths = sum(1 for line in f if line.strip())
        if len(labels) != n_paths:
            raise ValueError(f"{label_file} has {len(labels)} labels but {name}.txt lists {n_paths} images")
        out.append(np.asarray([int(x) for x in labels], dtype=np.int64))
    return out[0], out[1]
