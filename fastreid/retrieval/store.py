"""The on-disk layout of a search index (see docs/search.md, "Index format").

::

    INDEX_DIR/manifest.json             what the index is (written last: its presence means "finished")
    INDEX_DIR/config.yaml               config of the model that extracted the features
    INDEX_DIR/build_state.json          plan of an unfinished build (shards and the model's fingerprint)
    INDEX_DIR/shards/NNNNN.npy          features of shard N (count x dim, float16 or float32, memory-mappable)
    INDEX_DIR/shards/NNNNN.items.json   {"paths": [...], "patents": [...], "cwd": ...} of shard N, in order
    INDEX_DIR/dba.npy                   float32 features after database-side augmentation (only with DBA)
    INDEX_DIR/faiss.index               the IVF structure (faiss.write_index) over the normalised features
                                        (none for flat; faiss.part-RRRRR.tmp: a process's part while building)

Every file is written under a temporary name and renamed, so a killed build leaves finished shards
and nothing half-written; a shard is finished when both of its files exist.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from fastreid.utils.file_io import atomic_open

MANIFEST = "manifest.json"
BUILD_STATE = "build_state.json"
CONFIG = "config.yaml"
FAISS_FILE = "faiss.index"
DBA_FILE = "dba.npy"
SHARD_DIR = "shards"
FORMAT_NAME = "fastreid-search-index"
# 2: the manifest records the retrieval options ("retrieval"), one spelling of faiss structures.
FORMAT_VERSION = 2


def shard_files(index: int) -> Tuple[str, str]:
    """Relative paths of shard ``index``'s feature and item files."""
    return os.path.join(SHARD_DIR, f"{index:05d}.npy"), os.path.join(SHARD_DIR, f"{index:05d}.items.json")


def write_json(path: str, data: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=1)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_array(path: str, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array))


def write_shard(root: str, index: int, feats: np.ndarray, paths: List[str], patents: List[str]) -> None:
    """Write shard ``index``: items first, features last (the feature file marks it finished).

    ``cwd`` (the working folder) is what relative paths of this shard are relative to.
    """
    feat_file, item_file = shard_files(index)
    write_json(os.path.join(root, item_file), {"paths": paths, "patents": patents, "cwd": os.getcwd()})
    write_array(os.path.join(root, feat_file), feats)


def shard_done(root: str, index: int, count: int) -> bool:
    """True when shard ``index`` exists with ``count`` rows (a finished shard of the current plan)."""
    feat_file, item_file = (os.path.join(root, f) for f in shard_files(index))
    if not (os.path.isfile(feat_file) and os.path.isfile(item_file)):
        return False
    return int(np.load(feat_file, mmap_mode="r").shape[0]) == count


def read_shard_items(root: str, index: int) -> Dict[str, List[str]]:
    return read_json(os.path.join(root, shard_files(index)[1]))


def open_shard(root: str, index: int) -> np.ndarray:
    """Shard ``index``'s features, memory-mapped read-only."""
    return np.load(os.path.join(root, shard_files(index)[0]), mmap_mode="r")


def read_manifest(root: str) -> Dict[str, Any]:
    """The manifest of the index in ``root``; a clear error when ``root`` holds no finished index."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        extra = " (an unfinished build is there: run build_index again to finish it)" \
            if os.path.isfile(os.path.join(root, BUILD_STATE)) else ""
        raise FileNotFoundError(f"{root} is not a search index: {MANIFEST} not found{extra}")
    manifest = read_json(path)
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a {FORMAT_NAME} version {FORMAT_VERSION} manifest (an index of an older "
                         f"version is rebuilt with tools/build_index.py)")
    return manifest
