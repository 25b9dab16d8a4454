"""Search results as files: one JSON object per query (``.jsonl``) or one row per result (``.csv``),
by drawing or grouped by patent (``tools/search.py --output``, docs/search.md). A drawing of unknown
patent has ``"patent": null`` (an empty cell in CSV)."""
from __future__ import annotations

import csv
import json
from typing import Any, Dict, List, Sequence

from fastreid.utils.file_io import atomic_open

from .index import SearchHit
from .patents import PatentHit

OUTPUT_FORMATS = (".jsonl", ".csv")


def _drawing(h: SearchHit) -> Dict[str, Any]:
    return {"rank": h.rank, "path": h.path, "item": h.item, "patent": h.patent or None, "score": h.score}


def write_drawing_results(path: str, queries: Sequence[str], hits: Sequence[Sequence[SearchHit]]) -> None:
    """``.jsonl``: ``{"query", "results": [{rank, path, item, patent, score}]}`` per line; ``.csv``: one row per hit."""
    with atomic_open(path, "w") as f:
        if path.endswith(".jsonl"):
            for q, row in zip(queries, hits):
                f.write(json.dumps({"query": q, "results": [_drawing(h) for h in row]}) + "\n")
        else:
            w = csv.writer(f)
            w.writerow(["query", "rank", "path", "item", "patent", "score"])
            for q, row in zip(queries, hits):
                w.writerows([q, h.rank, h.path, h.item, h.patent, f"{h.score:.6f}"] for h in row)


def write_patent_results(path: str, queries: Sequence[str], groups: Sequence[Sequence[PatentHit]]) -> None:
    """``.jsonl``: ``{"query", "patents": [{rank, patent, score, drawings: [{rank, path, item, patent, score}]}]}``
    per line; ``.csv``: one row per drawing of each patent (``patent_rank``, ``patent``, ``patent_score``, then
    the drawing's ``rank``, ``item``, ``path``, ``score``)."""
    with atomic_open(path, "w") as f:
        if path.endswith(".jsonl"):
            for q, row in zip(queries, groups):
                patents: List[Dict[str, Any]] = [
                    {"rank": g.rank, "patent": g.patent or None, "score": g.score,
                     "drawings": [_drawing(h) for h in g.drawings]} for g in row]
                f.write(json.dumps({"query": q, "patents": patents}) + "\n")
        else:
            w = csv.writer(f)
            w.writerow(["query", "patent_rank", "patent", "patent_score", "rank", "item", "path", "score"])
            for q, row in zip(queries, groups):
                w.writerows([q, g.rank, g.patent, f"{g.score:.6f}", h.rank, h.item, h.path, f"{h.score:.6f}"]
                            for g in row for h in g.drawings)
