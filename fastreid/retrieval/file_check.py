"""Every drawing of a list checked before any feature is extracted: exists, is an image, is complete.

A check costs a ``stat``, PIL's header parse (no decode) and, for PNG and JPEG, a read of the file's
last kilobyte: a PNG must end in its ``IEND`` chunk and a JPEG in its end-of-image marker, so a file cut
short by an interrupted copy is found here, not after shards were written. All problems are reported at
once, each with the list file and line that named the drawing (see docs/search.md).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional

from PIL import Image, UnidentifiedImageError

from .items import Items

logger = logging.getLogger(__name__)

__all__ = ["FileProblem", "UnreadableFilesError", "check_file", "check_items", "readable_items"]

# Bytes read from the end of a PNG or JPEG file to find its end marker.
_TAIL = 1024
_END_MARKERS = {"PNG": (b"IEND", "its IEND chunk"), "JPEG": (b"\xff\xd9", "its end-of-image marker")}
# Problems listed one by one in an error; the rest are counted.
MAX_LISTED = 20


class UnreadableFilesError(ValueError):
    """Drawings of a list are missing or unreadable; the message lists them with their list lines."""


@dataclass
class FileProblem:
    """One drawing that cannot be read: its path, where it was listed and why."""

    path: str
    origin: str
    reason: str

    def __str__(self) -> str:
        where = f" (listed at {self.origin})" if self.origin else ""
        return f"{self.path}{where}: {self.reason}"


def check_file(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as an image (no such file, a folder, not an image, cut short), or None."""
    if not os.path.exists(path):
        return "no such file"
    if os.path.isdir(path):
        return "a folder, not an image file"
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
        marker = _END_MARKERS.get(fmt)
        if marker is not None:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - _TAIL))
                if marker[0] not in f.read():
                    return f"truncated {fmt} file (it does not end with {marker[1]})"
    except UnidentifiedImageError:
        return f"not an image file PIL can read ({os.path.getsize(path)} bytes)"
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"cannot be read: {e}"
    return None


def check_items(items: Items) -> List[FileProblem]:
    """Every drawing of ``items`` that cannot be read, in list order."""
    problems = []
    for path in items.paths:
        reason = check_file(path)
        if reason is not None:
            problems.append(FileProblem(path, items.origins.get(path, ""), reason))
    return problems


def _listed(problems: List[FileProblem]) -> str:
    """The problems, one per line (the first :data:`MAX_LISTED`, then a count)."""
    shown = [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(shown)


def readable_items(items: Items, skip_unreadable: bool = False, hint: str = "") -> Items:
    """``items`` after :func:`check_items`: unchanged when all are readable; without the unreadable ones
    (named in a warning) when ``skip_unreadable``.

    Raises:
        UnreadableFilesError: some drawing cannot be read and ``skip_unreadable`` is False. The first line
            names the first problem and its list line; then every problem; then ``hint`` (what to do).
    """
    problems = check_items(items)
    if not problems:
        return items
    if skip_unreadable:
        logger.warning("Skipping %d of %d listed drawing(s) that cannot be read:\n%s", len(problems), len(items),
                       _listed(problems))
    else:
        head = f"{len(problems)} of {len(items)} listed drawing(s) cannot be read, the first: {problems[0]}"
        if len(problems) == len(items) and items.origins.get(items.paths[0], "").rpartition(":")[2].isdigit():
            head = f"none of the listed drawings can be read, the first: {problems[0]}: is " \
                   f"{items.origins[items.paths[0]].rpartition(':')[0]} a list of drawings " \
                   f"('<image path> [<patent id>]' per line)?"
        raise UnreadableFilesError(f"{head}\n{_listed(problems)}" + (f"\n{hint}" if hint else ""))
    bad = {p.path for p in problems}
    kept = Items(origins=items.origins)
    for path, patent, where in zip(items.paths, items.patents, items.where_each()):
        if path not in bad:
            kept.paths.append(path)
            kept.patents.append(patent)
            kept.listed_at.append(where)
    return kept
