"""The dataset seen by the data loaders: items -> dicts of image tensor, label, camera and path."""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from .data_utils import read_image

Item = Tuple[str, object, int]


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
        if seed is None:
            return self.transform(img)
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                return self.transform(img)
        finally:
            random.setstate(py_state)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, object]:
        index, seed = (key if isinstance(key, tuple) else (key, None))
        path, pid, camid = self.items[index]
        img = read_image(path, self.grayscale, self.origins.get(path))
        target = self.pid_dict[str(pid)] if self.relabel else int(pid)
        return {"images": self._transform(img, seed), "targets": target, "camids": int(camid), "img_paths": path}
