"""Base class of retrieval datasets and the list-file reader they share."""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from fastreid.config import CfgNode

from ..data_utils import is_readable

logger = logging.getLogger(__name__)

Item = Tuple[str, object, int]
# Skipped unreadable files named in the log; the rest are counted.
SKIPPED_LISTED = 20


class ListFormatError(ValueError):
    """A list file has a malformed line; the message shows file:line and the line."""


def datasets_root(cfg: Optional[CfgNode] = None) -> str:
    """``DATASETS.ROOT``, else ``$FASTREID_DATASETS``, else ``datasets``."""
    root = cfg.DATASETS.ROOT if cfg is not None else ""
    return os.path.expanduser(root or os.environ.get("FASTREID_DATASETS", "datasets"))


def read_list(path: str, base_dir: Optional[str] = None, labeled: bool = True,
              origins: Optional[Dict[str, str]] = None) -> List[Tuple[str, int, int]]:
    """Parse a list file: ``<path> <label> [<camid>]`` per line (only ``<path>`` when not labeled).

    Paths are resolved against ``base_dir`` (default: the list file's folder). Blank lines are
    ignored. ``origins`` (if given) receives ``image path -> "list:line"`` for error messages
    (every listing, comma-separated, when an image is listed more than once).

    Returns:
        ``(image path, label, camid)`` per line; label is -1 and camid 0 when absent.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"List file not found: {path}")
    base_dir = os.path.dirname(os.path.abspath(path)) if base_dir is None else base_dir
    out: List[Tuple[str, int, int]] = []
    # utf-8-sig: a byte-order mark (written by some Windows editors) is not part of the first path.
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            expected = "'<path> <label> [<camid>]'" if labeled else "'<path>'"
            if (labeled and len(parts) not in (2, 3)) or (not labeled and len(parts) != 1):
                raise ListFormatError(f"{path}:{lineno}: expected {expected}, got {line!r}")
            try:
                label = int(parts[1]) if labeled else -1
                camid = int(parts[2]) if len(parts) == 3 else 0
            except ValueError:
                raise ListFormatError(f"{path}:{lineno}: label and camera id must be integers in {expected}, "
                                      f"got {line!r}") from None
            img = os.path.normpath(os.path.join(base_dir, parts[0]))
            out.append((img, label, camid))
            if origins is not None:
                where = f"{path}:{lineno}"
                origins[img] = f"{origins[img]}, {where}" if img in origins else where
    return out


def pick_base_dir(list_path: str, candidates: List[str]) -> str:
    """The first folder of ``candidates`` in which the list's first path exists (else the first one).

    Lets one dataset class accept lists written relative to different folders (e.g. DeepPatent
    paths with or without the leading ``patent_data/``) at the cost of one file check.
    """
    first = None
    if os.path.isfile(list_path):
        with open(list_path, encoding="utf-8-sig") as f:
            first = next((line.split()[0] for line in f if line.strip()), None)
    if first is not None:
        for c in candidates:
            if os.path.exists(os.path.join(c, first)):
                return c
    return candidates[0]


class ImageDataset:
    """A retrieval dataset: ``train``, ``query`` and ``gallery`` lists of ``(img_path, pid, camid)``.

    Training pids are strings prefixed by the dataset name (so combined datasets never collide);
    query/gallery pids are integers, -1 when the set is unlabeled (``labeled = False``).
    ``origins`` maps image paths to the list file and line they came from.
    Subclasses fill the three lists and call :meth:`finish`.
    """

    labeled: bool = True

    def __init__(self, root: str = "", cfg: Optional[CfgNode] = None) -> None:
        self.root = root or datasets_root(cfg)
        self.cfg = cfg
        self.train: List[Item] = []
        self.query: List[Item] = []
        self.gallery: List[Item] = []
        self.origins: Dict[str, str] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def train_pid(self, label: object) -> str:
        """The collision-free training identity of ``label``."""
        return f"{self.name}_{label}"

    def combine_test_into_train(self) -> None:
        """Also train on the query and gallery images (``DATASETS.COMBINEALL``), as separate identities."""
        self.train = self.train + [(p, self.train_pid(f"test_{pid}"), cam) for p, pid, cam in self.query + self.gallery]

    def finish(self) -> None:
        """Drop unreadable images when ``DATASETS.SKIP_UNREADABLE`` asks for it, then log a summary."""
        if self.cfg is not None and self.cfg.DATASETS.SKIP_UNREADABLE:
            for split in ("train", "query", "gallery"):
                items = getattr(self, split)
                kept = [it for it in items if is_readable(it[0])]
                if len(kept) != len(items):
                    skipped = sorted({it[0] for it in items} - {it[0] for it in kept})
                    listed = "\n".join(f"  {p}" + (f" (listed at {self.origins[p]})" if p in self.origins else "")
                                       for p in skipped[:SKIPPED_LISTED])
                    more = f"\n  ... and {len(skipped) - SKIPPED_LISTED} more" if len(skipped) > SKIPPED_LISTED else ""
                    logger.warning("%s %s: skipped %d unreadable or missing images of %d (DATASETS.SKIP_UNREADABLE):"
                                   "\n%s%s", self.name, split, len(items) - len(kept), len(items), listed, more)
                setattr(self, split, kept)
        logger.info("%s: train %d images / %d ids, query %d, gallery %d", self.name, len(self.train),
                    len({it[1] for it in self.train}), len(self.query), len(self.gallery))
