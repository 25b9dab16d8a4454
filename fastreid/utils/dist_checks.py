"""Refuse a several-machine run whose processes do not share their output folder or do not read the same input.

Training's OUTPUT_DIR (rank 0 writes the checkpoints, every rank reads ``last_checkpoint`` on ``--resume``)
and an index folder (every rank writes its shards, rank 0 reads them all) must be the same folder on every
machine. On node-local disks each machine has its own folder of that name: a build fails late, after the
extraction, and a resume starts some ranks from a checkpoint and the others from scratch.

Each process reads its part of the training set, test set or drawing list from its own disk: a machine with
another copy (another version of a list) would train on a mix, or stop in the middle of an epoch while the
others wait for it. Both checks fail on every process with the same one-line message.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from typing import Dict, Iterable, List, Sequence, Tuple

from fastreid.utils import comm

__all__ = ["SharedFolderError", "InputMismatchError", "check_shared_folder", "check_same_input"]

MARKER_PREFIX = ".shared-check-"
# A network file system may cache a directory listing for a moment: a missing marker is looked for again.
_RETRIES, _RETRY_WAIT_S = 4, 0.5

# (rank, host, absolute folder as this rank sees it, ranks whose markers it sees, its own problem)
_View = Tuple[int, str, str, List[int], str]


class SharedFolderError(OSError):
    """A folder that every process must share is not the same folder on every machine."""


class InputMismatchError(ValueError):
    """The processes of one job read different input (another copy of a data set or list)."""


def _marker(folder: str, token: str, rank: int) -> str:
    return os.path.join(folder, f"{MARKER_PREFIX}{token}-{rank}")


def _ranks_seen(folder: str, token: str, world: int) -> List[int]:
    """The ranks whose markers this process finds in ``folder`` (listed again while some are missing)."""
    wanted = {os.path.basename(_marker(folder, token, r)): r for r in range(world)}
    seen: List[int] = []
    for attempt in range(_RETRIES):
        if attempt:
            time.sleep(_RETRY_WAIT_S)
        try:
            names = set(os.listdir(folder))
        except OSError:
            names = set()
        seen = sorted(r for name, r in wanted.items() if name in names)
        if len(seen) == world:
            break
    return seen


def _span(ranks: Sequence[int]) -> str:
    """``0-3, 6`` for ranks 0, 1, 2, 3, 6."""
    parts: List[str] = []
    for r in sorted(ranks):
        if parts and parts[-1].split("-")[-1] == str(r - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{r}"
        else:
            parts.append(str(r))
    return ", ".join(parts)


def _message(folder: str, what: str, why: str, views: Sequence[_View], world: int) -> str:
    """One line: which processes (hosts, paths) see which markers, and what to do."""
    groups: Dict[Tuple[Tuple[int, ...], str], List[_View]] = {}
    for v in views:
        groups.setdefault((tuple(v[3]), v[4]), []).append(v)
    told = []
    for (seen, problem), members in groups.items():
        ranks = _span([m[0] for m in members])
        where = ", ".join(sorted({f"{m[1]}:{m[2]}" for m in members}))
        if problem:
            told.append(f"rank {ranks} ({where}) {problem}")
        else:
            missing = sorted(set(range(world)) - set(seen))
            told.append(f"rank {ranks} ({where}) " + (f"does not see the files of rank {_span(missing)}" if missing
                                                       else "sees them all"))
    return (f"{what} {folder} is not one folder shared by all {world} processes: {'; '.join(told)}. {why}"
            f"Put it on a file system every machine mounts at the same path (NFS, Lustre, ...) and run again")


def check_shared_folder(folder: str, what: str, why: str = "") -> None:
    """Raise :class:`SharedFolderError` on every process unless all of them write into one ``folder``.

    Every process creates ``folder`` if needed and writes a marker named after this check (unique per call)
    and its rank; after a barrier each lists the markers it sees; the views are exchanged, the markers
    removed. Call it on every process, before any expensive work; a no-op in a single process.

    Args:
        folder: the folder as this process names it (relative paths resolve per process).
        what: how the user named it in the error, e.g. ``"OUTPUT_DIR"`` or ``"--output"``.
        why: a sentence (ending in ". ") saying why it must be shared.
    """
    world = comm.get_world_size()
    if world == 1:
        return
    rank = comm.get_rank()
    token = comm.all_gather(uuid.uuid4().hex if rank == 0 else None)[0]
    marker = _marker(folder, token, rank)
    problem = ""
    try:
        os.makedirs(folder, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as f:
            f.write(socket.gethostname())
    except OSError as e:
        problem = f"cannot write there ({e.strerror or e})"
    comm.synchronize()
    views: List[_View] = comm.all_gather(
        (rank, socket.gethostname(), os.path.abspath(folder), _ranks_seen(folder, token, world), problem))
    if os.path.exists(marker):
        os.remove(marker)
    if any(v[4] or len(v[3]) != world for v in views):
        raise SharedFolderError(_message(folder, what, why, views, world))


def check_same_input(what: str, lines: Iterable[str], count: int, unit: str, hint: str) -> None:
    """Raise :class:`InputMismatchError` on every process unless all of them hold the same ``lines``.

    Only a digest of the lines and ``count`` travel; call it on every process, a no-op in a single one.

    Args:
        what: the input as the user knows it, e.g. ``"The training set (DATASETS.NAMES ...)"``.
        lines: one line per item (path, id, ...), in the order the processes split them.
        count: the number of items, shown in the message with ``unit`` (e.g. ``"images"``).
        hint: what to do, ending in a full stop.
    """
    if comm.get_world_size() == 1:
        return
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    views = comm.all_gather((comm.get_rank(), socket.gethostname(), count, digest.hexdigest()[:12]))
    if len({v[3] for v in views}) == 1:
        return
    groups: Dict[Tuple[int, str], List[Tuple[int, str]]] = {}
    for rank, host, n, fingerprint in views:
        groups.setdefault((n, fingerprint), []).append((rank, host))
    told = "; ".join(f"rank {_span([r for r, _ in members])} ({', '.join(sorted({h for _, h in members}))}) "
                     f"has {n} {unit} (fingerprint {fingerprint})" for (n, fingerprint), members in groups.items())
    raise InputMismatchError(f"{what} differs between the processes: {told}. {hint}")
