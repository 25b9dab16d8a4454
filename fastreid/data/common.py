"""The dataset seen by the data loaders: items -> dicts of image tensor, label, camera and path."""
from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from .data_utils import read_image

Item = Tuple[str, object, int]


def seeded_call(fn: Callable, seed: Optional[int], *args: Any) -> Any:
    """``fn(*args)`` under torch and python generators seeded with ``seed`` (restored afterwards);
    a plain call when ``seed`` is None."""
    if seed is None:
        return fn(*args)
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            return fn(*args)
    finally:
        random.setstate(py_state)


class SeededDataset(Dataset):
    """Any map-style dataset (a user's own, returning its own dicts) behind the training samplers: a
    ``(index, sample_seed)`` key runs ``dataset[index]`` under generators seeded from ``sample_seed``, so
    its augmentation is exact on resume as with :class:`CommDataset`. Other attributes (``num_classes``,
    ``img_items``, ...) are the wrapped dataset's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Any:
        index, seed = (key if isinstance(key, tuple) else (key, None))
        return seeded_call(self.dataset.__getitem__, seed, index)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CommDataset(Dataset):
    """Images of one or more datasets with labels ready for training or testing.

    With ``relabel`` the identities (strings prefixed by dataset name) become 0..N-1 in sorted
    order; otherwise labels are kept as given (query/gallery ids, -1 when unlabeled).

    ``__getitem__`` accepts a plain index (test loaders) or an ``(index, sample_seed)`` pair (training
    samplers): the transform then runs under torch and python generators seeded from
    ``sample_seed`` and restored afterwards, so augmentation does not depend on worker or history.
    """

    def __init__(self, items: Sequence[Item], transform: Optional[Callable] = None, relabel: bool = True,
                 grayscale: bool = True, origins: Optional[Dict[str, str]] = None, labeled: bool = True) -> None:
        self.items: List[Item] = list(items)
        self.transform = transform
        self.relabel = relabel
        self.grayscale = grayscale
        self.origins = origins or {}
        self.labeled = labeled
        if relabel:
            self.pid_dict = {pid: i for i, pid in enumerate(sorted({str(it[1]) for it in self.items}))}
        else:
            self.pid_dict = {}
        # fast-reid datasets may name cameras with strings ("market_test_3"): numbered in sorted order.
        cams = {it[2] for it in self.items}
        self.cam_dict = ({c: i for i, c in enumerate(sorted(cams, key=str))}
                         if relabel and not all(isinstance(c, int) for c in cams) else {})

    @property
    def img_items(self) -> List[Item]:
        """The ``(path, pid, camid)`` items (fast-reid's name)."""
        return self.items

    @property
    def num_cameras(self) -> int:
        return len({it[2] for it in self.items})

    @property
    def num_classes(self) -> int:
        """Number of distinct training identities (0 when labels are not relabeled)."""
        return len(self.pid_dict)

    @property
    def pids(self) -> List[object]:
        """The identity of every item, in item order (what the identity samplers group by)."""
        return [it[1] for it in self.items]

    @property
    def camids(self) -> List[int]:
        """The camera of every item, in item order (what the camera-aware sampler looks at)."""
        return [it[2] for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _transform(self, img, seed: Optional[int]):
        if self.transform is None:
            return img
        return seeded_call(self.transform, seed, img)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, object]:
        index, seed = (key if isinstance(key, tuple) else (key, None))
        path, pid, camid = self.items[index]
        img = read_image(path, self.grayscale, self.origins.get(path))
        target = self.pid_dict[str(pid)] if self.relabel else int(pid)
        camid = self.cam_dict[camid] if self.cam_dict else int(camid)
        return {"images": self._transform(img, seed), "targets": target, "camids": camid, "img_paths": path}
