"""Atomic file writes: a result is either complete under its final name or absent."""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from typing import IO, Any, Iterator, List

# mkstemp names: "<final name>.<8 random characters>.tmp".
_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds.

    The file gets the mode a plain ``open`` would give (0666 minus the umask): ``mkstemp`` creates
    0600 and the rename would carry that over.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=_TMP_SUFFIX, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete what killed ``atomic_open`` writes left in ``folder`` (``<name>.XXXXXXXX.tmp``); returns the paths.

    Only call it when no other process writes into ``folder`` (at the start of a run, on rank 0).
    """
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.*" + _TMP_SUFFIX)):
        stem = os.path.basename(path)[:-len(_TMP_SUFFIX)]
        if len(stem.rpartition(".")[2]) == 8 and os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


class PathManager:
    """fast-reid's file-system facade (from iopath), for local paths: ``open``, ``exists``, ``isfile``,
    ``isdir``, ``ls``, ``mkdirs``, ``rm`` and ``get_local_path``, as static methods."""

    @staticmethod
    def open(path: str, mode: str = "r", **kwargs: Any) -> IO:
        return open(path, mode, **kwargs)

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.exists(path)

    @staticmethod
    def isfile(path: str) -> bool:
        return os.path.isfile(path)

    @staticmethod
    def isdir(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def ls(path: str) -> List[str]:
        return sorted(os.listdir(path))

    @staticmethod
    def mkdirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def rm(path: str) -> None:
        os.remove(path)

    @staticmethod
    def get_local_path(path: str) -> str:
        return path
