"""Custom data without code: a folder per identity, or ``<path> <label>`` list files.

Both read their settings from ``DATASETS.CUSTOM.*``; relative paths there are relative to the
datasets root (``DATASETS.ROOT`` / ``$FASTREID_DATASETS``).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from fastreid.config import CfgNode, ConfigError, get_cfg
from fastreid.utils.registry import DATASET_REGISTRY

from .bases import ImageDataset, Item, read_list

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def query_count(num_images: int) -> int:
    """Queries taken from an identity: 1 for 2-3 images, 2 for 4 or more, none for a single image
    (every identity keeps at least one gallery image), as in DeepPatent's val and test splits."""
    if num_images < 2:
        return 0
    return 1 if num_images < 4 else 2


def _resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def scan_identity_folders(folder: str) -> Dict[str, List[str]]:
    """``identity name -> sorted image paths`` for every sub-folder of ``folder`` holding images."""
    out: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if not os.path.isdir(sub):
            continue
        files = sorted(os.path.join(sub, f) for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS))
        if files:
            out[name] = files
    return out


def split_query_gallery(ids: Dict[str, List[str]], labels: Dict[str, int],
                        rng: np.random.Generator) -> Tuple[List[Item], List[Item]]:
    """Apply :func:`query_count` to every identity, picking its queries at random."""
    query: List[Item] = []
    gallery: List[Item] = []
    for name, files in ids.items():
        chosen = set(rng.choice(len(files), size=query_count(len(files)), replace=False).tolist())
        for i, f in enumerate(files):
            (query if i in chosen else gallery).append((f, labels[name], 0))
    return query, gallery


@DATASET_REGISTRY.register()
class ImageFolderRetrieval(ImageDataset):
    """``DATASETS.CUSTOM.FOLDER`` holds one sub-folder of images per identity.

    If it has ``train/``, ``query/`` and ``gallery/`` sub-folders (each one folder per identity),
    those are the splits. Otherwise a ``CUSTOM.TEST_FRACTION`` of the identities, drawn with
    ``CUSTOM.SPLIT_SEED``, is held out and split into query/gallery by :func:`query_count`.
    """

    def __init__(self, root: str = "", cfg: Optional[CfgNode] = None) -> None:
        super().__init__(root=root, cfg=cfg)
        custom = (cfg or get_cfg()).DATASETS.CUSTOM
        if not custom.FOLDER:
            raise ConfigError("ImageFolderRetrieval needs DATASETS.CUSTOM.FOLDER (one sub-folder per identity)")
        folder = _resolve(self.root, custom.FOLDER)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"ImageFolderRetrieval: DATASETS.CUSTOM.FOLDER {folder} is not a folder")
        if all(os.path.isdir(os.path.join(folder, s)) for s in ("train", "query", "gallery")):
            train = scan_identity_folders(os.path.join(folder, "train"))
            query = scan_identity_folders(os.path.join(folder, "query"))
            gallery = scan_identity_folders(os.path.join(folder, "gallery"))
            labels = {n: i for i, n in enumerate(sorted(set(query) | set(gallery)))}
            self.query = [(f, labels[n], 0) for n, files in query.items() for f in files]
            self.gallery = [(f, labels[n], 0) for n, files in gallery.items() for f in files]
        else:
            if not 0.0 <= float(custom.TEST_FRACTION) < 1.0:
                raise ConfigError(f"DATASETS.CUSTOM.TEST_FRACTION must be in [0, 1), got {custom.TEST_FRACTION}")
            ids = scan_identity_folders(folder)
            names = sorted(ids)
            rng = np.random.default_rng(int(custom.SPLIT_SEED))
            n_test = int(round(len(names) * float(custom.TEST_FRACTION)))
            test_names = set(rng.permutation(names)[:n_test].tolist())
            train = {n: ids[n] for n in names if n not in test_names}
            test = {n: ids[n] for n in names if n in test_names}
            labels = {n: i for i, n in enumerate(sorted(test))}
            self.query, self.gallery = split_query_gallery(test, labels, rng)
        self.train = [(f, self.train_pid(n), 0) for n, files in train.items() for f in files]
        if cfg is not None and cfg.DATASETS.COMBINEALL:
            self.combine_all()
        self.finish()


@DATASET_REGISTRY.register()
class ListFileDataset(ImageDataset):
    """Splits from ``DATASETS.CUSTOM.{TRAIN,QUERY,GALLERY}_LIST`` (``<path> <label> [<camid>]`` lines);
    paths are relative to ``CUSTOM.IMAGE_ROOT`` or, when that is empty, to each list's folder.
    An empty list key leaves that split empty (e.g. a test-only dataset)."""

    def __init__(self, root: str = "", cfg: Optional[CfgNode] = None) -> None:
        super().__init__(root=root, cfg=cfg)
        custom = (cfg or get_cfg()).DATASETS.CUSTOM
        if not (custom.TRAIN_LIST or custom.QUERY_LIST or custom.GALLERY_LIST):
            raise ConfigError("ListFileDataset needs DATASETS.CUSTOM.TRAIN_LIST and/or QUERY_LIST + GALLERY_LIST")
        image_root = _resolve(self.root, custom.IMAGE_ROOT) if custom.IMAGE_ROOT else None

        def load(key: str) -> List[Tuple[str, int, int]]:
            value = getattr(custom, key)
            return read_list(_resolve(self.root, value), image_root, origins=self.origins) if value else []

        self.train = [(p, self.train_pid(label), cam) for p, label, cam in load("TRAIN_LIST")]
        self.query = load("QUERY_LIST")
        self.gallery = load("GALLERY_LIST")
        if cfg is not None and cfg.DATASETS.COMBINEALL:
            self.combine_all()
        self.finish()
