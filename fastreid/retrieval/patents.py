"""Results by patent: a patent searcher asks which *patents* match, not which drawings.

The patents ranked by their best drawing are the distinct patents in the order their first drawing
appears in the drawing ranking, so the first ``k`` of them are found among the top ``k x m`` drawings
when no patent has more than ``m`` drawings in the index (:func:`patent_search_depth`). A drawing
without a known patent (``""``) is an entry of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from .index import SearchHit


@dataclass
class PatentHit:
    """One patent: ``rank`` from 1, its id (``""``: a drawing of unknown patent), the score of its best
    drawing, and its drawings among the results, best first."""

    rank: int
    patent: str
    score: float
    drawings: List[SearchHit] = field(default_factory=list)


def patent_search_depth(patents: Sequence[str], k: int) -> int:
    """Drawings to retrieve so that the best ``k`` patents are all among them (``k`` x the largest number of
    drawings of one patent; a drawing of unknown patent counts alone), capped at the index size."""
    counts: Dict[str, int] = {}
    for pid in patents:
        if pid:
            counts[pid] = counts.get(pid, 0) + 1
    return min(len(patents), k * max([1, *counts.values()]))


def group_by_patent(hits: Sequence[SearchHit], k: int) -> List[PatentHit]:
    """The first ``k`` patents of a drawing ranking, each once, ranked by its best drawing, with its drawings.

    Args:
        hits: one query's drawings, best first (deep enough, see :func:`patent_search_depth`).
        k: patents to return.
    """
    groups: List[PatentHit] = []
    by_id: Dict[str, PatentHit] = {}
    for hit in hits:
        group = by_id.get(hit.patent) if hit.patent else None
        if group is None:
            if len(groups) == k:
                continue
            group = PatentHit(len(groups) + 1, hit.patent, hit.score)
            groups.append(group)
            if hit.patent:
                by_id[hit.patent] = group
        group.drawings.append(hit)
    return groups
