"""Retrieval visualisation: one PNG grid per query (query + top-k) and an HTML page linking them.

Correct results are framed green, wrong ones red (grey when ids are unknown); each tile shows its
rank and score. Only PIL is needed.
"""
from __future__ import annotations

import html
import logging
import os
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..utils.file_io import atomic_open

logger = logging.getLogger(__name__)

GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (128, 128, 128), (0, 90, 220)
_TEXT_H = 16
_BORDER = 4


def _thumbnail(path: str, size: int) -> Image.Image:
    """The image letter-boxed into ``size x size`` on white; a grey tile if it cannot be read."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
    except (OSError, ValueError):
        return Image.new("RGB", (size, size), (200, 200, 200))
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return tile


def render_query_grid(query_path: str, result_paths: Sequence[str], scores: Sequence[float],
                      correct: Optional[Sequence[bool]], out_path: str, thumb: int = 128,
                      title: str = "") -> str:
    """Draw query + results side by side into ``out_path`` (PNG) and return the path."""
    cell = thumb + 2 * _BORDER
    n = len(result_paths) + 1
    canvas = Image.new("RGB", (n * cell + _BORDER, cell + 2 * _TEXT_H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((_BORDER, 1), title, fill=(0, 0, 0))
    tiles = [(query_path, BLUE, "query")]
    for r, (p, s) in enumerate(zip(result_paths, scores)):
        colour = GREY if correct is None else (GREEN if correct[r] else RED)
        tiles.append((p, colour, f"#{r + 1} | {s:.3f}"))
    for col, (path, colour, label) in enumerate(tiles):
        x, y = col * cell + _BORDER // 2, _TEXT_H
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
        canvas.paste(_thumbnail(path, thumb), (x + _BORDER, y + _BORDER))
        draw.text((x + 2, y + cell + 1), label, fill=colour)
    with atomic_open(out_path, "wb") as f:
        canvas.save(f, format="PNG")
    return out_path


def write_retrieval_visualisation(out_dir: str, query_paths: Sequence[str], gallery_paths: Sequence[str],
                                  topk_idx: np.ndarray, topk_scores: np.ndarray, query_ids: Sequence[int],
                                  q_pids: Optional[Sequence] = None, g_pids: Optional[Sequence] = None,
                                  ap: Optional[Sequence[float]] = None, thumb: int = 128) -> str:
    """Write ``out_dir/query_<i>.png`` for the chosen queries and ``out_dir/index.html``.

    Args:
        query_ids: rows of ``topk_idx`` to draw (e.g. :func:`worst_queries`).
        q_pids, g_pids: ids to mark results correct/wrong; omit for unlabeled sets.
        ap: per-query AP shown in the titles, when known.
    Returns:
        Path of the HTML page.
    """
    os.makedirs(out_dir, exist_ok=True)
    labeled = q_pids is not None and g_pids is not None
    rows: List[str] = []
    for qi in query_ids:
        qi = int(qi)
        idx = np.asarray(topk_idx[qi])
        correct = [g_pids[j] == q_pids[qi] for j in idx] if labeled else None
        title = f"query {qi}" + (f" | AP {100 * ap[qi]:.1f}%" if ap is not None else "")
        name = f"query_{qi}.png"
        render_query_grid(query_paths[qi], [gallery_paths[j] for j in idx], np.asarray(topk_scores[qi]),
                          correct, os.path.join(out_dir, name), thumb, title)
        rows.append(f'<li><a href="{html.escape(name)}">{html.escape(title)}</a> '
                    f'({html.escape(os.path.basename(str(query_paths[qi])))})<br>'
                    f'<img src="{html.escape(name)}" alt="{html.escape(title)}"></li>')
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Retrieval results</title></head>\n"
            "<body><h1>Retrieval results</h1>\n<p>Green: correct, red: wrong, blue: query.</p>\n<ol>\n"
            + "\n".join(rows) + "\n</ol></body></html>\n")
    path = os.path.join(out_dir, "index.html")
    with atomic_open(path, "w") as f:
        f.write(page)
    logger.info("Wrote retrieval visualisation of %d queries to %s", len(rows), path)
    return path


def worst_queries(ap: np.ndarray, num: int) -> np.ndarray:
    """Indices of the ``num`` queries with the lowest AP (NaN, i.e. no positive, skipped)."""
    ap = np.asarray(ap, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(ap))
    return valid[np.argsort(ap[valid], kind="stable")[:num]]
