"""Which drawings to index or query: a file, a folder (sorted walk) or a list file, with patent ids.

A list file has one image per line, ``<path> [<patent id>]``, paths relative to the list's folder
(the DeepPatent and codalab lists work as they are). A drawing's patent id is the number in a DeepPatent
file name (``USD0810412-20180220-D00005.png`` -> ``USD0810412``), else the list's second column when
there is one (anonymised names), else unknown (``""``).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fastreid.data.datasets.bases import pick_base_dir

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
_DEEPPATENT_NAME = re.compile(r"^(US[A-Z]*\d+)-\d{8}-D\d+", re.IGNORECASE)


class DuplicateError(ValueError):
    """The same drawing is listed twice (or is already in the index)."""


@dataclass
class Items:
    """Drawings in index order: the path as given, its patent id and where it was listed (for errors).

    ``origins`` maps a path to where it was first listed; ``listed_at`` (when filled, one entry per
    position) says where each occurrence was listed, so that a repeated line can be named.
    """

    paths: List[str] = field(default_factory=list)
    patents: List[str] = field(default_factory=list)
    origins: Dict[str, str] = field(default_factory=dict)
    listed_at: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def extend(self, other: "Items") -> None:
        self.listed_at = self.where_each() + other.where_each()
        self.paths += other.paths
        self.patents += other.patents
        self.origins.update(other.origins)

    def where_each(self) -> List[str]:
        """Where each position was listed (``listed_at``, else the path's first listing)."""
        if len(self.listed_at) == len(self.paths):
            return list(self.listed_at)
        return [self.origins.get(p, "") for p in self.paths]


def patent_id(path: str, listed: Optional[str] = None) -> str:
    """The patent id of a drawing: the DeepPatent number of its name, else ``listed``, else ``""`` (unknown:
    a folder's name, such as the challenge's anonymised ``database``, says nothing about the patent)."""
    m = _DEEPPATENT_NAME.match(os.path.basename(path))
    if m:
        return m.group(1).upper()
    return listed or ""


def _walk(folder: str) -> List[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def read_image_list(path: str) -> Items:
    """Items of a list file: ``<path> [<patent id>]`` per line, blank lines skipped.

    Paths are relative to the list's folder, or to its parent when the first one is found only there
    (the codalab ``lists/`` layout).
    """
    folder = os.path.dirname(path)
    base = pick_base_dir(path, [folder, os.path.dirname(os.path.abspath(folder)) if folder else ".."])
    items = Items()
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ValueError(f"{path}:{lineno}: expected '<image path> [<patent id>]', got {raw.strip()!r}")
            img = os.path.normpath(os.path.join(base, parts[0]))
            items.paths.append(img)
            items.patents.append(patent_id(img, parts[1] if len(parts) == 2 else None))
            items.origins.setdefault(img, f"{path}:{lineno}")
            items.listed_at.append(f"{path}:{lineno}")
    return items


def collect_images(spec: str) -> Items:
    """The drawings named by ``spec``: one image file, a folder (sorted recursive walk) or a list file."""
    if os.path.isdir(spec):
        paths = _walk(spec)
        if not paths:
            raise FileNotFoundError(f"--images {spec}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        return Items(paths, [patent_id(p) for p in paths], {p: spec for p in paths})
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"--images {spec}: no such file or folder")
    if spec.lower().endswith(LIST_EXTENSIONS):
        items = read_image_list(spec)
        if not items.paths:
            raise ValueError(f"--images {spec}: the list file is empty")
        return items
    return Items([spec], [patent_id(spec)], {spec: "--images"})


def dataset_items(entries: Iterable[Tuple[str, object, int]], origins: Dict[str, str]) -> Items:
    """Items of a registered dataset split: labelled splits give their label as the patent id."""
    items = Items(origins=dict(origins))
    for path, pid, _ in entries:
        items.paths.append(path)
        labelled = pid is not None and str(pid) != "-1"
        items.patents.append(patent_id(path, str(pid) if labelled else None))
    return items


def drop_duplicates(items: Items, existing: Sequence[str] = (), skip: bool = False) -> Tuple[Items, int]:
    """``items`` without drawings listed twice or already in ``existing`` (compared as absolute paths).

    Raises :class:`DuplicateError` naming the first duplicate unless ``skip``; returns the kept
    items and how many were dropped.
    """
    indexed = {os.path.abspath(p) for p in existing}
    first: Dict[str, str] = {}
    kept = Items(origins=items.origins)
    dropped = 0
    for p, pid, where in zip(items.paths, items.patents, items.where_each()):
        key = os.path.abspath(p)
        if key in indexed or key in first:
            if not skip:
                at = f" at {where}" if where else ""
                problem = f"(listed{at}) is already in the index" if key in indexed else \
                    f"is listed again{at} (first at {first[key] or 'an earlier position'})"
                raise DuplicateError(f"{p} {problem}; remove that line, or pass --skip-duplicates to skip such "
                                     f"drawings")
            dropped += 1
            continue
        first[key] = where
        kept.paths.append(p)
        kept.patents.append(pid)
        kept.listed_at.append(where)
    if dropped:
        logger.warning("Skipped %d duplicate drawings (listed twice or already indexed)", dropped)
    return kept, dropped
