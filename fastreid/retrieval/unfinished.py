"""An unfinished index build, met again: resume it, keep what still holds, or discard it (``--restart``).

A build writes ``build_state.json`` (its model fingerprint, options and plan of shards) before the first
shard and removes it when the index is complete. Run again on the same folder:

* same drawings, model and options: the finished shards are kept and the rest extracted;
* the list changed (a bad drawing removed, lines added): every finished shard whose drawings, in order,
  are the ones the new plan puts there is kept, the others are removed and extracted again;
* another model or other options: refused, naming what differs; ``--restart`` discards the finished
  shards of the unfinished build (never those of the finished index it adds to) and starts again.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

from fastreid.utils.file_io import remove_stale_temporaries

from . import store
from .items import Items

logger = logging.getLogger(__name__)

__all__ = ["resume_unfinished", "discard_unfinished"]

# Entries of build_state.json that must match for any finished shard to be reused, and what a difference means.
_SAME_FOR_REUSE = (("fingerprint", "another model (checkpoint, config or preprocessing)"),
                   ("options", "other options (feature dtype, shard size, DBA, query expansion, faiss structure)"),
                   ("first_shard", "another number of shards in the index it adds to"))


def _finished(root: str, first_shard: int) -> List[int]:
    """Numbers of the shard files (``>= first_shard``) an unfinished build left in ``root``."""
    folder = os.path.join(root, store.SHARD_DIR)
    if not os.path.isdir(folder):
        return []
    numbers = set()
    for name in os.listdir(folder):
        stem = name.split(".", 1)[0]
        if stem.isdigit() and int(stem) >= first_shard and name.endswith((".npy", ".items.json")):
            numbers.add(int(stem))
    return sorted(numbers)


def _remove_shard(root: str, number: int) -> None:
    for rel in store.shard_files(number):
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            os.remove(path)


def _holds(root: str, number: int, items: Items, start: int, count: int) -> bool:
    """Whether finished shard ``number`` holds exactly ``items[start:start+count]`` (same files, same patents)."""
    if not store.shard_done(root, number, count):
        return False
    stored = store.read_shard_items(root, number)
    cwd = stored.get("cwd", os.getcwd())
    here = os.getcwd()
    return ([os.path.normpath(os.path.join(cwd, p)) for p in stored["paths"]] ==
            [os.path.normpath(os.path.join(here, p)) for p in items.paths[start:start + count]]
            and list(stored["patents"]) == list(items.patents[start:start + count]))


def resume_unfinished(root: str, old: Dict[str, Any], state: Dict[str, Any], plan: Sequence[Tuple[int, int, int]],
                      items: Items) -> str:
    """Prepare ``root`` (rank 0) to continue the unfinished build ``old`` as the build ``state``.

    Args:
        root: the index folder.
        old: the unfinished build's ``build_state.json``.
        state: the new build's state (same keys).
        plan: the new build's shards as (number, first item, item count).
        items: the new build's drawings.
    Returns:
        "" when the build can go on (shards that still hold are kept), else why not and what to do.
    """
    for folder in (root, os.path.join(root, store.SHARD_DIR)):
        if os.path.isdir(folder):
            remove_stale_temporaries(folder)
    if {k: old.get(k) for k in state} == state:
        logger.info("Resuming the unfinished build in %s", root)
        return ""
    first = int(old.get("first_shard", state["first_shard"]))
    left = _finished(root, first)
    differs = [what for key, what in _SAME_FOR_REUSE if old.get(key) != state[key]]
    if differs:
        return (f"{root} holds an unfinished build ({len(left)} finished shard(s), {store.BUILD_STATE}) with "
                f"{' and '.join(differs)}: its shards cannot be reused. Run the same command with --restart "
                f"to discard them and start again, or choose another --output folder")
    planned = {number: (start, count) for number, start, count in plan}
    kept = [n for n in left if n in planned and _holds(root, n, items, *planned[n])]
    for number in left:
        if number not in kept:
            _remove_shard(root, number)
    logger.info("The drawings of the unfinished build in %s changed: kept %d finished shard(s) whose drawings are "
                "unchanged, removed %d; extracting the rest", root, len(kept), len(left) - len(kept))
    return ""


def discard_unfinished(root: str) -> int:
    """Remove the unfinished build in ``root`` (``--restart``): its state and its shards (those after the
    finished index's, when it was adding to one). Returns how many shards were removed."""
    state_path = os.path.join(root, store.BUILD_STATE)
    if not os.path.isfile(state_path):
        return 0
    first = int(store.read_json(state_path).get("first_shard", 0))
    if os.path.isfile(os.path.join(root, store.MANIFEST)):
        first = max(first, len(store.read_manifest(root)["shards"]))
    numbers = _finished(root, first)
    for number in numbers:
        _remove_shard(root, number)
    os.remove(state_path)
    logger.info("--restart: discarded the unfinished build in %s (%d shard(s))", root, len(numbers))
    return len(numbers)
