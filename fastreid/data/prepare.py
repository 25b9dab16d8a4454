"""Resized copies of a data set, written once by ``tools/prepare_dataset.py`` and read by the loaders.

Decoding a 1024 px PNG drawing costs far more than the network's step on a 256 px one, so the
loaders can read a copy whose images are already at the loader's size::

    <root>/prepared/<H>x<W>/   same layout and list files as <root>, images resized to H x W
    <root>/prepared/<H>x<W>/prepared.json   size, grayscale, resize method, list-file digests

The copy holds what the loader's own first steps would compute (``read_image`` then the resize of
``INPUT.RESIZE_MODE``, :func:`fastreid.data.transforms.resize.resize_drawing`), so a loader reading it
yields the same tensors as one reading the originals (a test checks this). Copies of other resize modes
live beside the bicubic one (``prepared/<H>x<W>_<mode>``). A copy is used only when it matches the loader's size and
``INPUT.GRAYSCALE`` and its list files equal the originals; anything else is an error, never a
silently different input. Training with AutoAugment is the exception that differs (AutoAugment runs
before the resize), so ``DATASETS.PREPARED auto`` reads the originals for it and ``always`` uses the
copy anyway.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
from typing import Dict, Iterable, List, Sequence, Tuple

from fastreid.config import CfgNode, ConfigError
from fastreid.utils.file_io import atomic_open

from .data_utils import read_image
from .transforms.resize import resize_drawing

logger = logging.getLogger(__name__)

MANIFEST = "prepared.json"
FORMAT_VERSION = 1
MODES = ("auto", "always", "never")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def prepared_dir(root: str, size: Sequence[int], mode: str = "bicubic") -> str:
    """Where the copy of ``root`` at ``size`` = (height, width) shrunk with resize ``mode`` lives."""
    suffix = "" if mode == "bicubic" else f"_{mode}"
    return os.path.join(root, "prepared", f"{int(size[0])}x{int(size[1])}{suffix}")


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _manifest_entries(size: Sequence[int], grayscale: bool, mode: str) -> Dict[str, object]:
    # The bicubic wording predates INPUT.RESIZE_MODE; kept so that existing copies stay valid.
    resize = ("torchvision Resize, bicubic, antialias" if mode == "bicubic"
              else f"fastreid resize_drawing, mode {mode}"
              + (", ink x shrink/2 below paper" if mode == "ink" else ""))
    return {"version": FORMAT_VERSION, "size": [int(size[0]), int(size[1])], "grayscale": bool(grayscale),
            "resize": resize + ", on the image read by fastreid read_image"}


def resolve_root(cfg: CfgNode, root: str, size: Sequence[int], training: bool) -> str:
    """The folder a loader of images of ``size`` reads: a matching prepared copy of ``root`` or ``root``.

    Raises:
        ConfigError: bad ``DATASETS.PREPARED``, ``always`` without a copy, or a copy that does not
            match (size, grayscale, format version) or whose list files differ from the originals.
    """
    mode = cfg.DATASETS.PREPARED
    if mode not in MODES:
        raise ConfigError(f"DATASETS.PREPARED must be one of {MODES}, got {mode!r}")
    if mode == "never":
        return root
    if len(size) != 2:
        # fast-reid's one-value size keeps each image's aspect: there is no single H x W copy to read.
        if mode == "always":
            raise ConfigError(f"DATASETS.PREPARED is 'always' but the image size {list(size)} (INPUT.SIZE_TRAIN / "
                              f"SIZE_TEST) is not [height, width]: prepared copies exist only for a fixed size")
        return root
    folder = prepared_dir(root, size, cfg.INPUT.RESIZE_MODE)
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        if mode == "always":
            raise ConfigError(f"DATASETS.PREPARED is 'always' but {manifest_path} does not exist; write it with "
                              f"python tools/prepare_dataset.py --root {root} --size {size[0]}x{size[1]}"
                              + ("" if cfg.INPUT.RESIZE_MODE == "bicubic" else
                                 f" INPUT.RESIZE_MODE {cfg.INPUT.RESIZE_MODE}"))
        return root
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    expected = _manifest_entries(size, cfg.INPUT.GRAYSCALE, cfg.INPUT.RESIZE_MODE)
    for key, want in expected.items():
        if manifest.get(key) != want:
            raise ConfigError(f"{manifest_path}: {key} is {manifest.get(key)!r} but this run needs {want!r} "
                              f"(INPUT.SIZE_TRAIN/SIZE_TEST, INPUT.GRAYSCALE, INPUT.RESIZE_MODE); prepare the copy "
                              f"again or set DATASETS.PREPARED never")
    for rel, digest in manifest.get("files", {}).items():
        original = os.path.join(root, rel)
        if os.path.isfile(original) and _digest(original) != digest:
            raise ConfigError(f"{manifest_path}: {original} changed since the copy was prepared; run "
                              f"tools/prepare_dataset.py again or set DATASETS.PREPARED never")
    if training and mode == "auto" and cfg.INPUT.AUTOAUG.ENABLED and cfg.INPUT.AUTOAUG.PROB > 0:
        logger.info("Training reads the original images, not %s: AutoAugment runs before the resize "
                    "(DATASETS.PREPARED always would use the copy)", folder)
        return root
    logger.info("Reading the prepared %dx%d copy %s", size[0], size[1], folder)
    return folder


def _resize_one(job: Tuple[str, str, Tuple[int, int], bool, str]) -> None:
    src, dst, size, grayscale, mode = job
    img = resize_drawing(read_image(src, grayscale), size, mode)
    # Grayscale drawings are stored as one channel: L -> RGB -> L is exact for equal channels.
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    (img.convert("L") if grayscale else img).save(dst, format="PNG")


def listed_images(cfg: CfgNode, root: str) -> List[str]:
    """Every image of the train, query and gallery splits of ``DATASETS.NAMES`` and ``DATASETS.TESTS``."""
    from .build import load_dataset

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.ROOT, cfg.DATASETS.PREPARED, cfg.DATASETS.COMBINEALL = root, "never", True
    cfg.freeze()
    paths = set()
    for name in dict.fromkeys(list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS)):
        ds = load_dataset(cfg, name)
        for split in ("train", "query", "gallery"):
            paths.update(item[0] for item in getattr(ds, split, []) or [])
    return sorted(paths)


def prepare_dataset(cfg: CfgNode, sizes: Iterable[Sequence[int]], workers: int = 0) -> List[str]:
    """Write ``<root>/prepared/<H>x<W>`` for every size; returns the folders.

    All files of the root that are not images (list files, json) are copied as they are and their
    digests recorded; the listed images are resized. Each copy is written under a temporary name and
    renamed when complete, so a present ``prepared.json`` means a whole copy.
    """
    from .datasets import datasets_root

    root = os.path.abspath(datasets_root(cfg))
    images = listed_images(cfg, root)
    outside = [p for p in images if os.path.commonpath([root, os.path.abspath(p)]) != root]
    if outside:
        raise ValueError(f"{len(outside)} listed images lie outside the datasets root {root} (e.g. {outside[0]}); "
                         f"a prepared copy can only mirror files under the root")
    others = []
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.abspath(dirpath) == root and "prepared" in dirnames:
            dirnames.remove("prepared")
        others += [os.path.join(dirpath, f) for f in filenames if not _is_image(f)]
    folders = []
    for size in sizes:
        size = (int(size[0]), int(size[1]))
        final = prepared_dir(root, size, cfg.INPUT.RESIZE_MODE)
        tmp = f"{final}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        files = {}
        for src in others:
            rel = os.path.relpath(src, root)
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(tmp, rel))
            files[rel] = _digest(src)
        jobs = [(p, os.path.join(tmp, os.path.relpath(p, root)), size, bool(cfg.INPUT.GRAYSCALE),
                 str(cfg.INPUT.RESIZE_MODE)) for p in images]
        n = workers or os.cpu_count() or 1
        if n > 1 and len(jobs) > 1:
            with mp.get_context("fork" if os.name != "nt" else "spawn").Pool(n) as pool:
                for _ in pool.imap_unordered(_resize_one, jobs, chunksize=16):
                    pass
        else:
            for job in jobs:
                _resize_one(job)
        with atomic_open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({**_manifest_entries(size, cfg.INPUT.GRAYSCALE, cfg.INPUT.RESIZE_MODE), "source": root,
                       "images": len(jobs), "files": files}, f, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        logger.info("Prepared %d images at %dx%d in %s", len(jobs), size[0], size[1], final)
        folders.append(final)
    return folders

