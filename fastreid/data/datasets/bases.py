"""Base class of retrieval datasets and the list-file reader they share."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from tabulate import tabulate

from fastreid.config import CfgNode

from ..data_utils import is_readable

logger = logging.getLogger(__name__)

Item = Tuple[str, object, int]
# A split as fast-reid subclasses give it: a list of items, or a callable returning one (read when first used).
Split = Union[List[Item], Callable[[], List[Item]], None]
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

    Two ways to subclass, one class:

    - ours: ``__init__(self, root="", cfg=None)`` calls ``super().__init__(root=root, cfg=cfg)``, fills the
      three lists and calls :meth:`finish`;
    - fast-reid's: the subclass computes its splits (lists, or callables returning lists, read when first
      used) and calls ``super().__init__(train, query, gallery, **kwargs)`` with fast-reid's keywords
      (``transform``, ``mode``, ``combineall``, ``verbose``); :meth:`finish` then runs here. Its helpers
      ``check_before_run``, ``parse_data``, ``get_num_pids``, ``get_num_cams``, ``show_train``,
      ``show_test`` and ``combine_all`` are methods of this class.
    """

    labeled: bool = True
    # Identities left out when query/gallery are added to training (fast-reid's name).
    _junk_pids: Sequence[object] = ()

    def __init__(self, train: Split = None, query: Split = None, gallery: Split = None,
                 transform: Optional[Callable] = None, mode: str = "train", combineall: bool = False,
                 verbose: bool = True, *, root: str = "", cfg: Optional[CfgNode] = None, **kwargs: Any) -> None:
        self.root = root or getattr(self, "root", "") or datasets_root(cfg)
        self.cfg = cfg
        self._train: Split = [] if train is None else train
        self._query: Split = [] if query is None else query
        self._gallery: Split = [] if gallery is None else gallery
        self.origins: Dict[str, str] = getattr(self, "origins", {})
        self.transform = transform
        self.verbose = verbose
        if mode not in ("train", "query", "gallery"):
            raise ValueError(f"{self.name}: mode must be 'train', 'query' or 'gallery', got {mode!r}")
        self.mode = mode
        if train is None and query is None and gallery is None:
            return  # our subclasses fill the lists, then call finish()
        if combineall or (cfg is not None and cfg.DATASETS.COMBINEALL):
            self.combine_all()
        self.finish()
        pids = {it[1] for it in self.query + self.gallery}
        if type(self).labeled and self.query and len(pids) == 1:
            # The challenge code's test set gives every image the same id: no ranking can be scored.
            self.labeled = False
            logger.info("%s: every query and gallery image has id %r; treated as unlabeled (result.npy is written "
                        "instead of metrics)", self.name, next(iter(pids)))

    @staticmethod
    def _resolve(split: Split) -> List[Item]:
        return list(split() if callable(split) else split)

    @property
    def train(self) -> List[Item]:
        if not isinstance(self._train, list):
            self._train = self._resolve(self._train)
        return self._train

    @train.setter
    def train(self, items: Split) -> None:
        self._train = items

    @property
    def query(self) -> List[Item]:
        if not isinstance(self._query, list):
            self._query = self._resolve(self._query)
        return self._query

    @query.setter
    def query(self, items: Split) -> None:
        self._query = items

    @property
    def gallery(self) -> List[Item]:
        if not isinstance(self._gallery, list):
            self._gallery = self._resolve(self._gallery)
        return self._gallery

    @gallery.setter
    def gallery(self, items: Split) -> None:
        self._gallery = items

    @property
    def data(self) -> List[Item]:
        """The split named by ``mode`` (fast-reid's name)."""
        return getattr(self, self.mode)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def name(self) -> str:
        return type(self).__name__

    def train_pid(self, label: object) -> str:
        """The collision-free training identity of ``label``."""
        return f"{self.name}_{label}"

    def combine_all(self) -> None:
        """Also train on the query and gallery images (``DATASETS.COMBINEALL``), as separate identities;
        ids in ``_junk_pids`` are left out."""
        junk = set(self._junk_pids)
        self.train = self.train + [(p, self.train_pid(f"test_{pid}"), cam) for p, pid, cam in self.query + self.gallery
                                   if pid not in junk]

    def check_before_run(self, required_files: Union[str, Sequence[str]]) -> None:
        """Raise FileNotFoundError naming the first of ``required_files`` that does not exist."""
        for path in [required_files] if isinstance(required_files, str) else required_files:
            if not os.path.exists(path):
                raise FileNotFoundError(f"{self.name}: {path} not found (root {self.root}; set DATASETS.ROOT or "
                                        f"$FASTREID_DATASETS to the folder that holds the data set)")

    @staticmethod
    def parse_data(data: Sequence[Item]) -> Tuple[int, int]:
        """Number of distinct identities and of distinct cameras in ``data``."""
        return len({it[1] for it in data}), len({it[2] for it in data})

    def get_num_pids(self, data: Sequence[Item]) -> int:
        return self.parse_data(data)[0]

    def get_num_cams(self, data: Sequence[Item]) -> int:
        return self.parse_data(data)[1]

    def _show(self, splits: Sequence[str]) -> None:
        rows = [(s, *self.parse_data(getattr(self, s)), len(getattr(self, s))) for s in splits]
        logger.info("%s:\n%s", self.name, tabulate(rows, headers=["subset", "# ids", "# cameras", "# images"],
                                                    tablefmt="pipe"))

    def show_train(self) -> None:
        """Log the training split's size (fast-reid's name)."""
        self._show(["train"])

    def show_test(self) -> None:
        """Log the query and gallery splits' sizes (fast-reid's name)."""
        self._show(["query", "gallery"])

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
