"""Scalars logged during training and the writers that print or store them.

A utility (as in detectron2): the training loop, hooks and tools use it, and it imports nothing above
``fastreid.utils``. ``TensorboardXWriter`` is fast-reid's name of ``TensorboardWriter``.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict, deque
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from fastreid.utils.file_io import atomic_open

logger = logging.getLogger(__name__)

_CURRENT_STORAGE: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The storage of the running trainer (inside ``with EventStorage(...)``)."""
    if not _CURRENT_STORAGE:
        raise RuntimeError("get_event_storage() called outside of a training loop (no EventStorage active)")
    return _CURRENT_STORAGE[-1]


class HistoryBuffer:
    """Recent values of one scalar (bounded) plus its global sum and count."""

    def __init__(self, max_length: int = 1000) -> None:
        self._data: deque = deque(maxlen=max_length)
        self._total = 0.0
        self._count = 0

    def update(self, value: float, iteration: int) -> None:
        self._data.append((value, iteration))
        self._total += value
        self._count += 1

    def latest(self) -> float:
        return self._data[-1][0]

    def median(self, window: int) -> float:
        return float(np.median([v for v, _ in list(self._data)[-window:]]))

    def avg(self, window: int) -> float:
        return float(np.mean([v for v, _ in list(self._data)[-window:]]))

    def global_avg(self) -> float:
        return self._total / max(1, self._count)


class EventStorage:
    """Collects named scalars per iteration; writers read the latest (or smoothed) values."""

    def __init__(self, start_iter: int = 0) -> None:
        self.iter = start_iter
        self.start_iter = start_iter
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing: Dict[str, bool] = {}
        self._latest: Dict[str, Tuple[float, int]] = {}

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True) -> None:
        """Record ``value`` for this iteration; smoothed scalars are printed as a window median."""
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)
        self._smoothing.setdefault(name, smoothing_hint)

    def put_scalars(self, smoothing_hint: bool = True, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No scalar named {name!r} recorded")
        return self._history[name]

    def has(self, name: str) -> bool:
        return name in self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        return dict(self._latest)

    def latest_with_smoothing_hint(self, window: int = 20) -> Dict[str, Tuple[float, int]]:
        """Latest values, smoothed scalars replaced by their median over ``window`` entries."""
        return {k: (self._history[k].median(window) if self._smoothing[k] else v, it)
                for k, (v, it) in self._latest.items()}

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert _CURRENT_STORAGE[-1] is self
        _CURRENT_STORAGE.pop()


class EventWriter:
    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def truncate_metrics(json_file: str, start_iter: int) -> int:
    """Drop the rows of ``metrics.json`` at iterations ``>= start_iter`` (written after the checkpoint a run
    resumes from, so the resumed run writes them again); returns how many were dropped."""
    if not os.path.isfile(json_file):
        return 0
    with open(json_file, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            it = int(json.loads(line).get("iteration", -1))
        except (ValueError, AttributeError):
            # A line cut by a kill: never complete, never kept.
            continue
        if it < start_iter:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        with atomic_open(json_file, "w") as f:
            f.writelines(kept)
    return len(lines) - len(kept)


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration that has new scalars to ``metrics.json``.

    Values are the raw ones of that iteration (no smoothing), so runs can be compared exactly. The file is
    opened at the first write: rows at or after the storage's ``start_iter`` (left by the interrupted run a
    resume continues) are dropped first, so the file holds one row per iteration.
    """

    def __init__(self, json_file: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._path = json_file
        self._file: Optional[Any] = None
        self._last_written: Dict[str, int] = {}

    def write(self) -> None:
        storage = get_event_storage()
        if self._file is None:
            dropped = truncate_metrics(self._path, storage.start_iter)
            if dropped:
                logger.info("metrics.json: dropped %d rows from iteration %d on (written before the resume)",
                            dropped, storage.start_iter)
            self._file = open(self._path, "a", encoding="utf-8")
        by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, it) in storage.latest().items():
            if it > self._last_written.get(k, -1):
                by_iter[it][k] = v
                self._last_written[k] = it
        for it in sorted(by_iter):
            self._file.write(json.dumps({"iteration": it, **by_iter[it]}, sort_keys=True) + "\n")
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class TensorboardWriter(EventWriter):
    """Writes every new scalar to tensorboard event files under ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._window = window_size
        self._last_written: Dict[str, int] = {}

    def write(self) -> None:
        storage = get_event_storage()
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window).items():
            if it > self._last_written.get(k, -1):
                self._writer.add_scalar(k, v, it)
                self._last_written[k] = it
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Console line: iteration, ETA, losses, time per iteration, images/s and learning rate."""

    def __init__(self, max_iter: int, ims_per_batch: int, window_size: int = 20) -> None:
        self._max_iter = max_iter
        self._ims_per_batch = ims_per_batch
        self._window = window_size
        self._last: Optional[Tuple[int, float]] = None
        self._last_printed = -1

    def _eta(self, storage: EventStorage) -> str:
        it = storage.iter
        if storage.has("time"):
            # The mean, not the median: slow steps (evaluation aside) are part of the remaining time too.
            sec = storage.history("time").global_avg() * (self._max_iter - it - 1)
        elif self._last is not None and it > self._last[0]:
            sec = (time.perf_counter() - self._last[1]) / (it - self._last[0]) * (self._max_iter - it - 1)
        else:
            return "N/A"
        self._last = (it, time.perf_counter())
        return str(datetime.timedelta(seconds=int(sec)))

    def write(self) -> None:
        storage = get_event_storage()
        it = storage.iter
        if it >= self._max_iter or it == self._last_printed:
            return
        self._last_printed = it
        parts = [f"eta: {self._eta(storage)}", f"iter: {it}"]
        for k in sorted(n for n in storage.latest() if "loss" in n):
            parts.append(f"{k}: {storage.history(k).median(self._window):.4g}")
        if storage.has("time"):
            t = storage.history("time").avg(self._window)
            parts.append(f"time: {t:.4f}")
            if t > 0:
                parts.append(f"ims/s: {self._ims_per_batch / t:.1f}")
        if storage.has("data_time"):
            parts.append(f"data_time: {storage.history('data_time').avg(self._window):.4f}")
        if storage.has("lr"):
            parts.append(f"lr: {storage.history('lr').latest():.3e}")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 2 ** 20:.0f}M")
        logger.info("  ".join(parts))


TensorboardXWriter = TensorboardWriter

__all__ = ["CommonMetricPrinter", "EventStorage", "EventWriter", "JSONWriter", "TensorboardWriter",
           "TensorboardXWriter", "get_event_storage"]
